//! Column metadata of replicated tables.
//!
//! A TABLE_MAP event enters [`table_columns`] together with, when the binlog
//! lacks `binlog_row_metadata=FULL` or the table has no primary key, the
//! table's columns as read from the server's information_schema
//! ([`InfoColumn`], cached per table by [`SchemaCache`] and dropped after
//! DDL). Out comes one [`ColumnSpec`] per table column: name, type code
//! and display name, length/precision, scale, signedness, nullability,
//! row key and collation id. The row key is the primary key; a table
//! without one gets the unique key whose columns are all NOT NULL
//! ([`choose_unique_key`]: fewest columns, then index name), which
//! information_schema.STATISTICS tells and the binlog does not. The value
//! decoder (`values.rs`) reads these specs; the applier matches rows by
//! the key columns.

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
    /// Part of the unique NOT NULL key chosen for a table without a
    /// primary key ([`choose_unique_key`]).
    pub unique_key: bool,
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

/// The SQL that reads the unique indexes of one table (bind schema,
/// table): `(INDEX_NAME, COLUMN_NAME, NULLABLE)` in index order.
pub const UNIQUE_KEYS_SQL: &str = "SELECT INDEX_NAME, COLUMN_NAME, NULLABLE \
     FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
     AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX";

/// The row key of a table from its unique indexes (rows of
/// [`UNIQUE_KEYS_SQL`]): the primary key if there is one, else the unique
/// index with every column NOT NULL (NULLs may repeat in a unique index)
/// with the fewest columns, ties broken by index name. `None`: no such
/// index.
pub fn choose_unique_key(rows: &[(String, String, String)]) -> Option<Vec<String>> {
    let mut indexes: Vec<(&str, Vec<&str>, bool)> = Vec::new();
    for (index, column, nullable) in rows {
        let not_null = !nullable.eq_ignore_ascii_case("YES");
        match indexes.iter_mut().find(|(n, _, _)| n == index) {
            Some((_, cols, ok)) => {
                cols.push(column);
                *ok &= not_null;
            }
            None => indexes.push((index, vec![column], not_null)),
        }
    }
    if let Some((_, cols, _)) = indexes.iter().find(|(n, _, _)| *n == "PRIMARY") {
        return Some(cols.iter().map(|c| c.to_string()).collect());
    }
    indexes
        .into_iter()
        .filter(|(_, _, ok)| *ok)
        .min_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.0.cmp(b.0)))
        .map(|(_, cols, _)| cols.iter().map(|c| c.to_string()).collect())
}

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

/// True when the TABLE_MAP names primary-key columns.
pub fn has_primary_key(tme: &TableMapEvent<'_>) -> bool {
    OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map(|m| m.iter_primary_key().next().is_some())
        .unwrap_or(false)
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
    mark_unique_key(&mut out, info);
    Ok(out)
}

/// Without a primary key, marks the columns of the chosen unique NOT NULL
/// key as the row key, when every one of them is in the row image (by
/// name) and NOT NULL there too.
fn mark_unique_key(specs: &mut [ColumnSpec], info: Option<&[InfoColumn]>) {
    if specs.iter().any(|c| c.primary_key) {
        return;
    }
    let Some(info) = info else {
        return;
    };
    let key: Vec<&str> = info
        .iter()
        .filter(|c| c.unique_key)
        .map(|c| c.name.as_str())
        .collect();
    if key.is_empty() {
        return;
    }
    let found: Vec<usize> = key
        .iter()
        .filter_map(|k| specs.iter().position(|c| c.name == *k && !c.nullable))
        .collect();
    if found.len() == key.len() {
        for i in found {
            specs[i].primary_key = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        rows.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn unique_key_choice() {
        assert_eq!(choose_unique_key(&[]), None);
        // a nullable column disqualifies the index
        assert_eq!(choose_unique_key(&idx(&[("u", "a", "YES")])), None);
        let rows = idx(&[
            ("u_ab", "a", ""),
            ("u_ab", "b", ""),
            ("u_c", "c", "YES"),
            ("z", "d", ""),
            ("y", "e", ""),
        ]);
        assert_eq!(choose_unique_key(&rows), Some(vec!["e".to_string()]));
        let rows = idx(&[("u", "a", ""), ("PRIMARY", "id", "")]);
        assert_eq!(choose_unique_key(&rows), Some(vec!["id".to_string()]));
    }

    fn spec(name: &str, nullable: bool) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            nullable,
            ..ColumnSpec::default()
        }
    }

    fn info(name: &str, unique: bool) -> InfoColumn {
        InfoColumn {
            name: name.into(),
            unique_key: unique,
            ..InfoColumn::default()
        }
    }

    #[test]
    fn unique_key_is_marked_only_when_whole_and_not_null() {
        let mut s = vec![spec("a", false), spec("b", false), spec("c", true)];
        mark_unique_key(&mut s, Some(&[info("a", false), info("b", true)]));
        assert_eq!(
            s.iter().map(|c| c.primary_key).collect::<Vec<_>>(),
            [false, true, false]
        );
        // a key column missing from the image, or nullable in it: no key
        let mut s = vec![spec("a", false)];
        mark_unique_key(&mut s, Some(&[info("a", true), info("x", true)]));
        assert!(!s[0].primary_key);
        let mut s = vec![spec("c", true)];
        mark_unique_key(&mut s, Some(&[info("c", true)]));
        assert!(!s[0].primary_key);
        // a primary key wins
        let mut s = vec![spec("a", false), spec("b", false)];
        s[0].primary_key = true;
        mark_unique_key(&mut s, Some(&[info("b", true)]));
        assert!(!s[1].primary_key);
    }
}
