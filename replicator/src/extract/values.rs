//! Binlog row values → THL [`Value`]s with full fidelity.
//!
//! A value enters as mysql_common's [`BinlogValue`] (already cut out of the
//! row image using the TABLE_MAP metadata) together with its column's
//! [`ColumnSpec`] (`columns.rs`); it leaves as a [`Value`]. This is where
//! signedness is fixed up when the binlog has no signedness metadata
//! (mysql_common then decodes `UNSIGNED` columns as signed), where
//! TIMESTAMP/YEAR/ENUM/SET/BIT get their own variants, and where binary JSON
//! becomes text.

use crate::thl::{ColumnSpec, Date, DateTime, Time, Timestamp, Value};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::value::Value as MyValue;

/// Converts one decoded binlog value of column `col`.
pub fn convert(v: BinlogValue<'_>, col: &ColumnSpec) -> Result<Value, String> {
    use ColumnType::*;
    let ty = ColumnType::try_from(col.type_code).unwrap_or(MYSQL_TYPE_UNKNOWN);
    let v = match v {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            let json = j
                .parse()
                .map(serde_json::Value::from)
                .map_err(|e| format!("column {}: binary JSON: {e}", col.name))?;
            return Ok(Value::Json(json.to_string()));
        }
        BinlogValue::JsonDiff(diffs) => {
            // PARTIAL_UPDATE_ROWS (MySQL 8 binlog_row_value_options=PARTIAL_JSON):
            // kept as a JSON array of {op, path, value} for the applier.
            let mut arr = Vec::with_capacity(diffs.len());
            for d in &diffs {
                let value = match d.value() {
                    Some(j) => j
                        .clone()
                        .parse()
                        .map(serde_json::Value::from)
                        .map_err(|e| format!("column {}: JSON diff: {e}", col.name))?,
                    None => serde_json::Value::Null,
                };
                arr.push(serde_json::json!({
                    "op": format!("{:?}", d.operation()),
                    "path": d.path_str(),
                    "value": value,
                }));
            }
            return Ok(Value::Json(
                serde_json::json!({ "partial_update": arr }).to_string(),
            ));
        }
    };
    if v == MyValue::NULL {
        return Ok(Value::Null);
    }
    let bad = |what: &str, v: &MyValue| {
        format!(
            "column {} ({}): unexpected {what} value {v:?}",
            col.name, col.type_name
        )
    };
    Ok(match ty {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
        | MYSQL_TYPE_LONGLONG => match v {
            MyValue::Int(i) if col.unsigned => {
                let bits = match ty {
                    MYSQL_TYPE_TINY => 8,
                    MYSQL_TYPE_SHORT => 16,
                    MYSQL_TYPE_INT24 => 24,
                    MYSQL_TYPE_LONG => 32,
                    _ => 64,
                };
                let u = i as u64;
                Value::UInt(if bits == 64 {
                    u
                } else {
                    u & ((1u64 << bits) - 1)
                })
            }
            // mysql_common does not sign-extend signed MEDIUMINT
            MyValue::Int(i) if ty == MYSQL_TYPE_INT24 && i >= 0x80_0000 => {
                Value::Int(i - 0x100_0000)
            }
            MyValue::Int(i) => Value::Int(i),
            MyValue::UInt(u) if col.unsigned => Value::UInt(u),
            MyValue::UInt(u) => Value::Int(u as i64),
            other => return Err(bad("integer", &other)),
        },
        MYSQL_TYPE_FLOAT => match v {
            MyValue::Float(f) => Value::Float(f),
            MyValue::Double(d) => Value::Float(d as f32),
            other => return Err(bad("float", &other)),
        },
        MYSQL_TYPE_DOUBLE => match v {
            MyValue::Double(d) => Value::Double(d),
            MyValue::Float(f) => Value::Double(f as f64),
            other => return Err(bad("double", &other)),
        },
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => match v {
            MyValue::Bytes(b) => Value::Decimal(String::from_utf8_lossy(&b).into_owned()),
            other => return Err(bad("decimal", &other)),
        },
        MYSQL_TYPE_YEAR => match v {
            // mysql_common renders the stored byte y as 1900 + y; 0 means 0000.
            MyValue::Bytes(b) => {
                let y: i64 = String::from_utf8_lossy(&b)
                    .parse()
                    .map_err(|_| format!("column {}: bad YEAR {b:?}", col.name))?;
                Value::Int(if y == 1900 { 0 } else { y })
            }
            MyValue::Int(y) => Value::Int(y),
            other => return Err(bad("year", &other)),
        },
        MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE => match v {
            MyValue::Date(y, m, d, ..) => Value::Date(Date {
                year: y,
                month: m,
                day: d,
            }),
            other => return Err(bad("date", &other)),
        },
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => match v {
            MyValue::Date(y, mo, d, h, mi, s, us) => Value::DateTime(DateTime {
                date: Date {
                    year: y,
                    month: mo,
                    day: d,
                },
                hour: h,
                minute: mi,
                second: s,
                micros: us,
            }),
            other => return Err(bad("datetime", &other)),
        },
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => match v {
            MyValue::Time(neg, days, h, m, s, us) => Value::Time(Time {
                negative: neg,
                hours: days * 24 + h as u32,
                minutes: m,
                seconds: s,
                micros: us,
            }),
            other => return Err(bad("time", &other)),
        },
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => match v {
            MyValue::Int(secs) => Value::Timestamp(Timestamp {
                seconds: secs,
                micros: 0,
            }),
            MyValue::Bytes(b) => {
                let text = String::from_utf8_lossy(&b);
                let (s, us) = text.split_once('.').unwrap_or((&text, "0"));
                Value::Timestamp(Timestamp {
                    seconds: s
                        .parse()
                        .map_err(|_| format!("column {}: bad TIMESTAMP {text}", col.name))?,
                    micros: us
                        .parse()
                        .map_err(|_| format!("column {}: bad TIMESTAMP {text}", col.name))?,
                })
            }
            other => return Err(bad("timestamp", &other)),
        },
        MYSQL_TYPE_BIT => match v {
            MyValue::Bytes(b) => Value::Bit {
                data: b,
                bits: col.length as u16,
            },
            other => return Err(bad("bit", &other)),
        },
        MYSQL_TYPE_ENUM => match v {
            MyValue::Int(i) => Value::Enum(i as u16),
            MyValue::UInt(u) => Value::Enum(u as u16),
            other => return Err(bad("enum", &other)),
        },
        MYSQL_TYPE_SET => match v {
            MyValue::Bytes(b) => Value::Set(
                b.iter()
                    .take(8)
                    .enumerate()
                    .fold(0u64, |a, (i, x)| a | (*x as u64) << (8 * i)),
            ),
            MyValue::Int(i) => Value::Set(i as u64),
            other => return Err(bad("set", &other)),
        },
        MYSQL_TYPE_BLOB | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB
            if col.type_name == "JSON" =>
        {
            match v {
                MyValue::Bytes(b) => Value::Json(String::from_utf8_lossy(&b).into_owned()),
                other => return Err(bad("json", &other)),
            }
        }
        // the binlog strips trailing zero bytes of BINARY(n); the table pads them
        MYSQL_TYPE_STRING if col.type_name == "BINARY" => match v {
            MyValue::Bytes(mut data) => {
                if data.len() < col.length as usize {
                    data.resize(col.length as usize, 0);
                }
                Value::Bytes {
                    data,
                    charset: None,
                }
            }
            other => return Err(bad("binary", &other)),
        },
        _ => match v {
            MyValue::Bytes(data) => Value::Bytes {
                data,
                charset: col.charset,
            },
            MyValue::Int(i) => Value::Int(i),
            MyValue::UInt(u) => Value::UInt(u),
            MyValue::Float(f) => Value::Float(f),
            MyValue::Double(d) => Value::Double(d),
            other => return Err(bad("column", &other)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, unsigned: bool) -> ColumnSpec {
        ColumnSpec {
            name: "c".into(),
            type_code: ty as u8,
            unsigned,
            ..ColumnSpec::default()
        }
    }

    fn conv(v: MyValue, c: &ColumnSpec) -> Value {
        convert(BinlogValue::Value(v), c).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn unsigned_fixup_without_metadata() {
        use ColumnType::*;
        assert_eq!(
            conv(MyValue::Int(-1), &col(MYSQL_TYPE_TINY, true)),
            Value::UInt(255)
        );
        assert_eq!(
            conv(MyValue::Int(-1), &col(MYSQL_TYPE_SHORT, true)),
            Value::UInt(65535)
        );
        assert_eq!(
            conv(MyValue::Int(-1), &col(MYSQL_TYPE_INT24, true)),
            Value::UInt(16777215)
        );
        assert_eq!(
            conv(MyValue::Int(-1), &col(MYSQL_TYPE_LONG, true)),
            Value::UInt(u32::MAX as u64)
        );
        assert_eq!(
            conv(MyValue::Int(-1), &col(MYSQL_TYPE_LONGLONG, true)),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            conv(MyValue::Int(-1), &col(MYSQL_TYPE_LONGLONG, false)),
            Value::Int(-1)
        );
        assert_eq!(
            conv(MyValue::UInt(7), &col(MYSQL_TYPE_LONGLONG, true)),
            Value::UInt(7)
        );
    }

    #[test]
    fn temporal_and_special() {
        use ColumnType::*;
        assert_eq!(
            conv(
                MyValue::Bytes(b"1700000000.000123".to_vec()),
                &col(MYSQL_TYPE_TIMESTAMP2, false)
            ),
            Value::Timestamp(Timestamp {
                seconds: 1_700_000_000,
                micros: 123
            })
        );
        assert_eq!(
            conv(
                MyValue::Time(true, 1, 2, 3, 4, 5),
                &col(MYSQL_TYPE_TIME2, false)
            ),
            Value::Time(Time {
                negative: true,
                hours: 26,
                minutes: 3,
                seconds: 4,
                micros: 5
            })
        );
        assert_eq!(
            conv(
                MyValue::Bytes(b"1900".to_vec()),
                &col(MYSQL_TYPE_YEAR, false)
            ),
            Value::Int(0)
        );
        assert_eq!(
            conv(
                MyValue::Bytes(b"2024".to_vec()),
                &col(MYSQL_TYPE_YEAR, false)
            ),
            Value::Int(2024)
        );
        assert_eq!(
            conv(MyValue::Bytes(vec![5, 1]), &col(MYSQL_TYPE_SET, false)),
            Value::Set(0x105)
        );
        assert_eq!(
            conv(MyValue::Int(2), &col(MYSQL_TYPE_ENUM, false)),
            Value::Enum(2)
        );
        assert_eq!(
            conv(MyValue::NULL, &col(MYSQL_TYPE_LONG, false)),
            Value::Null
        );
        assert!(convert(
            BinlogValue::Value(MyValue::Bytes(vec![1])),
            &col(MYSQL_TYPE_LONG, false)
        )
        .is_err());
    }
}
