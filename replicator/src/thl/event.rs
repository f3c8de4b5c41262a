//! The THL event model: one replicated transaction (or one fragment of it).
//!
//! The extractor builds a [`ThlEvent`] from binlog events and hands it to
//! [`crate::thl::ThlWriter::append`]; readers hand back the same values, and
//! the applier matches on [`Change`] and [`Value`] to rebuild SQL. Everything
//! here is plain data with `serde` derives; the on-disk encoding of these
//! types is postcard (see `format.rs`), so changing a type here changes the
//! format: add new variants at the end and bump `RECORD_VERSION`.

use serde::{Deserialize, Serialize};

/// One THL record: a whole transaction (`fragno == 0 && last_frag`) or one
/// fragment of a large one. Fragments of one transaction share `seqno` and
/// every header field; only `fragno`, `last_frag` and `changes` differ.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ThlEvent {
    /// Global transaction number, strictly increasing by one in the log.
    pub seqno: u64,
    /// Fragment number within the transaction, from 0.
    pub fragno: u32,
    /// True on the final fragment of the transaction (and on unfragmented ones).
    pub last_frag: bool,
    /// Seqno at which the master that extracted this event began extracting.
    pub epoch: u64,
    /// Source position, e.g. `mysql-bin.000032:0000000473860407;-1`.
    pub eventid: String,
    /// Host name of the master that extracted the event.
    pub source_id: String,
    /// Shard (usually the schema) used for parallel apply.
    pub shard: String,
    /// Commit time on the source, microseconds since the Unix epoch (UTC).
    pub source_tstamp: i64,
    /// Time the extractor read it, microseconds since the Unix epoch (UTC).
    pub extract_tstamp: i64,
    /// Ordered `key=value` pairs: `server_id`, `service`, `dbms_type`, `gtid`…
    pub metadata: Vec<(String, String)>,
    /// The transaction body, in commit order.
    pub changes: Vec<Change>,
}

impl ThlEvent {
    /// A whole, unfragmented transaction with the given identity.
    pub fn new(seqno: u64, epoch: u64, eventid: impl Into<String>) -> Self {
        ThlEvent {
            seqno,
            fragno: 0,
            last_frag: true,
            epoch,
            eventid: eventid.into(),
            ..ThlEvent::default()
        }
    }

    /// The value of a metadata key, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when this record is a whole transaction on its own.
    pub fn is_whole(&self) -> bool {
        self.fragno == 0 && self.last_frag
    }
}

/// One change inside a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A statement-based change (or DDL), replayed as SQL text.
    Statement(Statement),
    /// Row-based changes to one table.
    Rows(RowsChange),
}

/// A SQL statement with the session context it ran in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Statement {
    /// Statement bytes as logged (not necessarily UTF-8: `_binary'…'`
    /// literals and non-UTF-8 client charsets are kept exactly).
    #[serde(with = "raw_bytes")]
    pub sql: Vec<u8>,
    /// `USE` schema in effect, if any.
    pub default_schema: Option<String>,
    /// Session variables the statement depends on.
    pub session: SessionVars,
}

impl Statement {
    /// A statement with no default schema and no session variables.
    pub fn new(sql: impl Into<Vec<u8>>) -> Self {
        Statement {
            sql: sql.into(),
            ..Statement::default()
        }
    }

    /// The SQL as text (invalid UTF-8 replaced), for display.
    pub fn sql_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.sql)
    }
}

/// Session state from the binlog query event; `None` = not set by the source.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SessionVars {
    /// `SET TIMESTAMP` value.
    pub timestamp: Option<Timestamp>,
    /// `sql_mode` bit mask as logged.
    pub sql_mode: Option<u64>,
    /// `character_set_client` collation id.
    pub charset_client: Option<u16>,
    /// `collation_connection` id.
    pub collation_connection: Option<u16>,
    /// `collation_server` id.
    pub collation_server: Option<u16>,
    /// `time_zone` name.
    pub time_zone: Option<String>,
    /// `auto_increment_increment`.
    pub auto_increment_increment: Option<u16>,
    /// `auto_increment_offset`.
    pub auto_increment_offset: Option<u16>,
    /// `INSERT_ID` for the statement.
    pub insert_id: Option<u64>,
    /// `LAST_INSERT_ID` for the statement.
    pub last_insert_id: Option<u64>,
    /// `RAND()` seeds.
    pub rand_seed: Option<(u64, u64)>,
    /// `foreign_key_checks`.
    pub foreign_key_checks: Option<bool>,
    /// `unique_checks`.
    pub unique_checks: Option<bool>,
    /// `autocommit`.
    pub autocommit: Option<bool>,
}

/// Row action of a [`RowsChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowAction {
    /// New rows: `after` images only.
    Insert,
    /// Changed rows: `before` (key) and `after` images.
    Update,
    /// Removed rows: `before` (key) images only.
    Delete,
}

impl RowAction {
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub fn as_str(self) -> &'static str {
        match self {
            RowAction::Insert => "INSERT",
            RowAction::Update => "UPDATE",
            RowAction::Delete => "DELETE",
        }
    }
}

/// Row changes to one table (one binlog rows event, typically).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowsChange {
    /// Schema (database) name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// INSERT, UPDATE or DELETE.
    pub action: RowAction,
    /// Columns of the after image, in the order of `RowChange::after`.
    pub columns: Vec<ColumnSpec>,
    /// Columns of the before image (the key), in the order of
    /// `RowChange::before`. With full row images this is every column.
    pub keys: Vec<ColumnSpec>,
    /// The rows.
    pub rows: Vec<RowChange>,
}

/// One row: before image (UPDATE/DELETE) and after image (INSERT/UPDATE).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RowChange {
    /// Values for `RowsChange::keys`.
    pub before: Option<Vec<Value>>,
    /// Values for `RowsChange::columns`.
    pub after: Option<Vec<Value>>,
}

/// Description of one column of a row image.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// 1-based column position in the table.
    pub index: u32,
    /// Column name (empty when the binlog carries no metadata for it).
    pub name: String,
    /// MySQL column type code (`MYSQL_TYPE_*`, e.g. 3 = LONG, 15 = VARCHAR).
    pub type_code: u8,
    /// Type name for display and DDL, e.g. `INT`, `VARCHAR`, `DECIMAL`.
    pub type_name: String,
    /// Length (chars/bytes), or precision for DECIMAL.
    pub length: u32,
    /// Scale for DECIMAL, fractional-second digits for temporal types.
    pub scale: u8,
    /// UNSIGNED numeric column.
    pub unsigned: bool,
    /// Column accepts NULL.
    pub nullable: bool,
    /// Column is part of the row key: the primary key or, for a table
    /// without one, the unique key over NOT NULL columns the extractor found
    /// in information_schema. The applier matches UPDATE/DELETE rows by
    /// these columns (by the whole before image when none is marked).
    pub primary_key: bool,
    /// Collation id of a character column.
    pub charset: Option<u16>,
}

/// A column value with full fidelity (no round trip through strings where
/// the binlog has structure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Signed integer types.
    Int(i64),
    /// Unsigned integer types.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DECIMAL as its exact decimal text (`-12.3400`).
    Decimal(String),
    /// CHAR/VARCHAR/TEXT/BINARY/BLOB bytes, with the collation id when known.
    Bytes {
        /// Raw bytes as stored.
        #[serde(with = "raw_bytes")]
        data: Vec<u8>,
        /// Collation id; `None` for binary or unknown.
        charset: Option<u16>,
    },
    /// DATE.
    Date(Date),
    /// TIME (may be negative and exceed 24 hours).
    Time(Time),
    /// DATETIME.
    DateTime(DateTime),
    /// TIMESTAMP (UTC instant).
    Timestamp(Timestamp),
    /// BIT(n): `bits` bits, big-endian bytes.
    Bit {
        /// Bytes, most significant first.
        #[serde(with = "raw_bytes")]
        data: Vec<u8>,
        /// Number of bits in the column.
        bits: u16,
    },
    /// ENUM index (1-based; 0 = the empty error value).
    Enum(u16),
    /// SET bit mask.
    Set(u64),
    /// JSON document as text.
    Json(String),
}

impl Value {
    /// A text value with a collation id.
    pub fn text(s: impl Into<String>, charset: Option<u16>) -> Self {
        Value::Bytes {
            data: s.into().into_bytes(),
            charset,
        }
    }

    /// A binary value.
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        Value::Bytes {
            data: data.into(),
            charset: None,
        }
    }
}

/// A calendar date; zero parts are allowed (`0000-00-00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Date {
    /// Year 0..=9999.
    pub year: u16,
    /// Month 0..=12.
    pub month: u8,
    /// Day 0..=31.
    pub day: u8,
}

/// A TIME value: `[-]hours:minutes:seconds.micros`, hours up to 838.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Time {
    /// Negative duration.
    pub negative: bool,
    /// Hours (may exceed 23).
    pub hours: u32,
    /// Minutes 0..=59.
    pub minutes: u8,
    /// Seconds 0..=59.
    pub seconds: u8,
    /// Microseconds 0..=999999.
    pub micros: u32,
}

/// A DATETIME value (no time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DateTime {
    /// Date part.
    pub date: Date,
    /// Hour 0..=23.
    pub hour: u8,
    /// Minute 0..=59.
    pub minute: u8,
    /// Second 0..=59.
    pub second: u8,
    /// Microseconds 0..=999999.
    pub micros: u32,
}

/// A UTC instant: seconds since the Unix epoch plus microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 00:00:00 UTC.
    pub seconds: i64,
    /// Microseconds 0..=999999.
    pub micros: u32,
}

/// `Vec<u8>` as a serde byte string instead of a sequence of `u8`: the same
/// postcard bytes (length + raw bytes) but copied in one go, not element by
/// element (several times faster for blobs and long statements).
mod raw_bytes {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_str<E>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        // JSON writes bytes as an array of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}
