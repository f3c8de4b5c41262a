//! Column metadata of replicated tables.
//!
//! A TABLE_MAP event enters [`table_columns`] together with, when the binlog
//! lacks `binlog_row_metadata=FULL`, the table's columns as read from the
//! server's information_schema ([`InfoColumn`], cached per table by
//! [`SchemaCache`] and dropped after DDL). Out comes one
//! [`ColumnSpec`] per table column: name, type code and display name,
//! length/precision, scale, signedness, nullability, primary key and
//! collation id. The value decoder (`values.rs`) reads these specs.

use crate::thl::ColumnSpec;
use mysql_common::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_common::constants::ColumnType;
use std::collections::HashMap;

/// Collation id of the `binary` pseudo character set.
pub const BINARY_COLLATION: u16 = 63;

/// One column as information_schema describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InfoColumn {
    /// Column name.
    pub name: String,
    /// `COLUMN_TYPE` contains `unsigned`.
    pub unsigned: bool,
    /// `COLUMN_KEY = 'PRI'`.
    pub primary_key: bool,
    /// Collation id, `None` for non-character columns.
    pub collation: Option<u16>,
    /// `DATA_TYPE`, lower case (`json` is how MariaDB marks JSON columns).
    pub data_type: String,
}

/// The SQL that reads [`InfoColumn`]s of one table (bind schema, table).
pub const INFO_COLUMNS_SQL: &str = "SELECT c.COLUMN_NAME, c.COLUMN_TYPE, c.COLUMN_KEY, co.ID, \
     c.DATA_TYPE FROM information_schema.COLUMNS c \
     LEFT JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = c.COLLATION_NAME \
     WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION";

/// information_schema columns per `(schema, table)`; cleared after DDL.
#[derive(Debug, Default)]
pub struct SchemaCache {
    tables: HashMap<(String, String), Vec<InfoColumn>>,
}

impl SchemaCache {
    /// Cached columns of a table.
    pub fn get(&self, schema: &str, table: &str) -> Option<&Vec<InfoColumn>> {
        self.tables.get(&(schema.to_string(), table.to_string()))
    }

    /// Stores the columns of a table.
    pub fn put(&mut self, schema: &str, table: &str, cols: Vec<InfoColumn>) {
        self.tables
            .insert((schema.to_string(), table.to_string()), cols);
    }

    /// Forgets everything (after DDL: any table may have changed).
    pub fn clear(&mut self) {
        self.tables.clear();
    }
}

/// True when the TABLE_MAP carries column names (`binlog_row_metadata=FULL`).
pub fn has_full_metadata(tme: &TableMapEvent<'_>) -> bool {
    OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map(|m| m.iter_column_name().next().is_some())
        .unwrap_or(false)
}

fn blob_name(pack: u8, binary: bool) -> &'static str {
    match (pack, binary) {
        (1, true) => "TINYBLOB",
        (1, false) => "TINYTEXT",
        (2, true) => "BLOB",
        (2, false) => "TEXT",
        (3, true) => "MEDIUMBLOB",
        (3, false) => "MEDIUMTEXT",
        (_, true) => "LONGBLOB",
        (_, false) => "LONGTEXT",
    }
}

/// Builds the column specs of a TABLE_MAP event, taking names, signedness,
/// keys and collations from its optional metadata, else from `info`.
pub fn table_columns(
    tme: &TableMapEvent<'_>,
    info: Option<&[InfoColumn]>,
) -> Result<Vec<ColumnSpec>, String> {
    use ColumnType::*;
    let n = tme.columns_count() as usize;
    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| format!("table map optional metadata: {e}"))?;
    let mut signed = meta.iter_signedness();
    let mut charsets = meta.iter_charset();
    let mut enum_charsets = meta.iter_enum_and_set_charset();
    let mut names = meta.iter_column_name();
    let pks: Vec<u64> = meta.iter_primary_key().filter_map(Result::ok).collect();
    let nulls = tme.null_bitmask();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ty = tme
            .get_column_type(i)
            .map_err(|e| format!("column {}: {e}", i + 1))?
            .ok_or_else(|| format!("column {} has no type", i + 1))?;
        let cm = tme.get_column_metadata(i).unwrap_or(&[]);
        let b = |k: usize| cm.get(k).copied().unwrap_or(0);
        let inf = info.and_then(|v| v.get(i));
        let unsigned_meta = if ty.is_numeric_type() {
            signed.next()
        } else {
            None
        };
        let charset_meta = if ty.is_character_type() {
            charsets.next().and_then(Result::ok)
        } else if ty.is_enum_or_set_type() {
            enum_charsets.next().and_then(Result::ok)
        } else {
            None
        };
        let name = match names.next() {
            Some(Ok(nm)) => nm.name().into_owned(),
            _ => inf.map(|c| c.name.clone()).unwrap_or_default(),
        };
        let unsigned = unsigned_meta.unwrap_or_else(|| inf.is_some_and(|c| c.unsigned));
        let charset = charset_meta.or_else(|| inf.and_then(|c| c.collation));
        let primary_key = if pks.is_empty() {
            inf.is_some_and(|c| c.primary_key)
        } else {
            pks.contains(&(i as u64))
        };
        let binary = charset == Some(BINARY_COLLATION);
        let (type_name, length, scale): (String, u32, u8) = match ty {
            MYSQL_TYPE_TINY => ("TINYINT".into(), 0, 0),
            MYSQL_TYPE_SHORT => ("SMALLINT".into(), 0, 0),
            MYSQL_TYPE_INT24 => ("MEDIUMINT".into(), 0, 0),
            MYSQL_TYPE_LONG => ("INT".into(), 0, 0),
            MYSQL_TYPE_LONGLONG => ("BIGINT".into(), 0, 0),
            MYSQL_TYPE_FLOAT => ("FLOAT".into(), b(0) as u32, 0),
            MYSQL_TYPE_DOUBLE => ("DOUBLE".into(), b(0) as u32, 0),
            MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => ("DECIMAL".into(), b(0) as u32, b(1)),
            MYSQL_TYPE_YEAR => ("YEAR".into(), 4, 0),
            MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE => ("DATE".into(), 0, 0),
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => ("TIME".into(), 0, b(0)),
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => ("DATETIME".into(), 0, b(0)),
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => ("TIMESTAMP".into(), 0, b(0)),
            MYSQL_TYPE_BIT => ("BIT".into(), b(1) as u32 * 8 + b(0) as u32, 0),
            MYSQL_TYPE_ENUM => ("ENUM".into(), b(1) as u32, 0),
            MYSQL_TYPE_SET => ("SET".into(), b(1) as u32, 0),
            MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => (
                if binary { "VARBINARY" } else { "VARCHAR" }.into(),
                u16::from_le_bytes([b(0), b(1)]) as u32,
                0,
            ),
            MYSQL_TYPE_STRING => {
                let (b0, b1) = (b(0) as u32, b(1) as u32);
                let len = if (b0 & 0x30) != 0x30 {
                    b1 | (((b0 & 0x30) ^ 0x30) << 4)
                } else {
                    b1
                };
                (if binary { "BINARY" } else { "CHAR" }.into(), len, 0)
            }
            MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB => {
                let json = inf.is_some_and(|c| c.data_type == "json");
                let name = if json {
                    "JSON"
                } else {
                    blob_name(b(0), binary)
                };
                (name.into(), b(0) as u32, 0)
            }
            MYSQL_TYPE_JSON => ("JSON".into(), 0, 0),
            MYSQL_TYPE_GEOMETRY => ("GEOMETRY".into(), b(0) as u32, 0),
            other => (
                format!("{other:?}")
                    .trim_start_matches("MYSQL_TYPE_")
                    .into(),
                0,
                0,
            ),
        };
        out.push(ColumnSpec {
            index: i as u32 + 1,
            name,
            type_code: ty as u8,
            type_name,
            length,
            scale,
            unsigned,
            nullable: nulls.get(i).map(|x| *x).unwrap_or(true),
            primary_key,
            charset: if ty.is_character_type() || ty.is_enum_or_set_type() {
                charset.filter(|c| *c != BINARY_COLLATION)
            } else {
                None
            },
        });
    }
    Ok(out)
}
