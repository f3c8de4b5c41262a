//! THL row changes → binlog row events, for `BINLOG '…'` statements (pure).
//!
//! The applier's default way to apply row changes: instead of SQL text
//! (`sql.rs`), which the server must parse, optimize and execute, each
//! [`RowsChange`] is turned back into the events a MariaDB primary writes
//! for it, and the server applies them through the same code path as its
//! own replication SQL thread (`Rows_log_event::do_apply_event`: row lookup
//! by primary key, no parser, no optimizer). The events travel base64
//! encoded to `BINLOG` statements (through a user variable set by a
//! prepared statement, or as a literal when a failed block is replayed
//! change by change), after one [`format_description`] per session; they
//! need the `BINLOG REPLAY` privilege (or `SUPER`).
//!
//! A transaction's changes enter [`encode_changes`] (on the dispatcher's
//! thread) and leave as [`TxEvents`]: its rows events, not yet ending a
//! statement, and the TABLE_MAP event of each table they touch, with ids
//! from the applier's [`TableIds`] (one id per table map, for the
//! applier's life). A channel's [`Joiner`] then puts the transactions of
//! a block into groups, each the TABLE_MAP events of its tables followed
//! by their rows events, the last flagged `STMT_END_F` (as a primary logs
//! one statement touching several tables): the server opens and locks
//! the tables once per group, and a `BINLOG` statement may end after any
//! group. [`append_changes`] does both for changes on their own (a failed
//! block replayed change by change). Layouts written here
//! (all integers little-endian unless noted):
//! - common header, 19 bytes: timestamp u32, type u8, server_id u32,
//!   event size u32, log position u32 (0), flags u16 (0); every event ends
//!   with a CRC32 of its bytes (the format description announces CRC32).
//! - TABLE_MAP (19): table id u48 (from [`TableIds`]), flags u16 (1), schema and table as
//!   length byte + name + NUL, column count (length-encoded), one type byte
//!   per column, metadata (length-encoded size, then per column 0–2
//!   bytes), nullability bitmap.
//! - WRITE/UPDATE/DELETE_ROWS v1 (23/24/25): table id u48, flags u16
//!   (`STMT_END_F`), column count, bitmap of the columns present (UPDATE:
//!   before image, then after image), then per row a NULL bitmap over the
//!   present columns and the non-NULL values in the server's packed
//!   binary forms (`append_value`; temporal and DECIMAL big-endian).
//!
//! What cannot be encoded exactly ([`Unsupported`]: a column missing from
//! both images, pre-5.6 temporal types, MySQL binary JSON, a value that
//! does not fit its column) is applied as SQL instead, by the caller.

use crate::thl::{ColumnSpec, RowAction, RowsChange, Value};
use std::sync::Arc;

/// FORMAT_DESCRIPTION event type.
pub const FORMAT_DESCRIPTION: u8 = 15;
/// TABLE_MAP event type.
pub const TABLE_MAP: u8 = 19;
const WRITE_ROWS_V1: u8 = 23;
const UPDATE_ROWS_V1: u8 = 24;
const DELETE_ROWS_V1: u8 = 25;
const HEADER: usize = 19;
const CRC: usize = 4;
const STMT_END_F: u16 = 1;
/// A rows event is closed after about this many bytes of rows (so a
/// large change becomes several groups).
pub const ROWS_EVENT_BYTES: usize = 256 << 10;

/// Why a change is applied as SQL rather than as row events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Post-header lengths of event types 1–171, as MariaDB 10.x announces
/// them (type, length); the others are 0.
const POST_HEADER: [(u8, u8); 33] = [
    (1, 56),
    (2, 13),
    (4, 8),
    (6, 18),
    (8, 4),
    (9, 4),
    (10, 4),
    (11, 4),
    (12, 18),
    (15, 228),
    (17, 4),
    (18, 26),
    (19, 8),
    (23, 8),
    (24, 8),
    (25, 8),
    (26, 2),
    (30, 10),
    (31, 10),
    (32, 10),
    (39, 10),
    (40, 10),
    (41, 10),
    (161, 4),
    (162, 19),
    (163, 4),
    (165, 13),
    (166, 8),
    (167, 8),
    (168, 8),
    (169, 10),
    (170, 10),
    (171, 10),
];

/// The FORMAT_DESCRIPTION event that starts a session's `BINLOG`
/// statements: binlog version 4, 19-byte headers, CRC32 checksums.
pub fn format_description(server_id: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + 50 + 4 + 1 + 171 + 1);
    body.extend_from_slice(&4u16.to_le_bytes());
    let mut version = [0u8; 50];
    let v = b"10.11.0-carbide";
    version[..v.len()].copy_from_slice(v);
    body.extend_from_slice(&version);
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(HEADER as u8);
    let mut lens = [0u8; 171];
    for (t, l) in POST_HEADER {
        lens[t as usize - 1] = l;
    }
    body.extend_from_slice(&lens);
    body.push(1); // checksum algorithm: CRC32
    let mut out = Vec::new();
    event(&mut out, FORMAT_DESCRIPTION, server_id, 0, |b| {
        b.extend_from_slice(&body)
    });
    out
}

/// Appends one event: header, `body`, CRC32.
fn event(out: &mut Vec<u8>, ty: u8, server_id: u32, when: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&when.to_le_bytes());
    out.push(ty);
    out.extend_from_slice(&server_id.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // size, patched below
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    body(out);
    let size = (out.len() - start + CRC) as u32;
    out[start + 9..start + 13].copy_from_slice(&size.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn lenenc(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// How a column is described in the table map and packed in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int(usize),
    Float,
    Double,
    Decimal { precision: u8, scale: u8 },
    Year,
    Date,
    Time2(u8),
    DateTime2(u8),
    Timestamp2(u8),
    Bit(u16),
    Enum(u8),
    Set(u8),
    Varchar(u16),
    Char(u16),
    Blob(u8),
    Geometry(u8),
}

impl Kind {
    fn of(c: &ColumnSpec) -> Result<Kind, Unsupported> {
        let fsp = || {
            if c.scale <= 6 {
                Ok(c.scale)
            } else {
                Err(Unsupported(format!(
                    "column {}: fractional digits {}",
                    c.name, c.scale
                )))
            }
        };
        let pack = |max: u32| {
            if (1..=max).contains(&c.length) {
                Ok(c.length as u8)
            } else {
                Err(Unsupported(format!(
                    "column {}: {} pack length {}",
                    c.name, c.type_name, c.length
                )))
            }
        };
        Ok(match c.type_code {
            1 => Kind::Int(1),
            2 => Kind::Int(2),
            9 => Kind::Int(3),
            3 => Kind::Int(4),
            8 => Kind::Int(8),
            4 => Kind::Float,
            5 => Kind::Double,
            246 if (1..=65).contains(&c.length) && u32::from(c.scale) <= c.length.min(38) => {
                Kind::Decimal {
                    precision: c.length as u8,
                    scale: c.scale,
                }
            }
            13 => Kind::Year,
            10 | 14 => Kind::Date,
            19 => Kind::Time2(fsp()?),
            18 => Kind::DateTime2(fsp()?),
            17 => Kind::Timestamp2(fsp()?),
            16 if (1..=64).contains(&c.length) => Kind::Bit(c.length as u16),
            247 => Kind::Enum(pack(2)?),
            248 => Kind::Set(pack(8)?),
            15 | 253 if c.length <= 0xffff => Kind::Varchar(c.length as u16),
            254 if c.length <= 1023 => Kind::Char(c.length as u16),
            249..=252 => Kind::Blob(pack(4)?),
            255 => Kind::Geometry(pack(4)?),
            _ => {
                return Err(Unsupported(format!(
                    "column {}: type {} ({}) has no row-event encoding here",
                    c.name, c.type_name, c.type_code
                )))
            }
        })
    }

    /// Table map type byte and metadata.
    fn table_map(self, out_type: &mut Vec<u8>, meta: &mut Vec<u8>) {
        let (ty, m): (u8, &[u8]) = match self {
            Kind::Int(1) => (1, &[]),
            Kind::Int(2) => (2, &[]),
            Kind::Int(3) => (9, &[]),
            Kind::Int(4) => (3, &[]),
            Kind::Int(_) => (8, &[]),
            Kind::Float => (4, &[4]),
            Kind::Double => (5, &[8]),
            Kind::Decimal { precision, scale } => (246, &[precision, scale]),
            Kind::Year => (13, &[]),
            Kind::Date => (10, &[]),
            Kind::Time2(f) => (19, &[f]),
            Kind::DateTime2(f) => (18, &[f]),
            Kind::Timestamp2(f) => (17, &[f]),
            Kind::Bit(bits) => (16, &[(bits % 8) as u8, (bits / 8) as u8]),
            Kind::Enum(p) => (254, &[247, p]),
            Kind::Set(p) => (254, &[248, p]),
            Kind::Varchar(len) => {
                out_type.push(15);
                meta.extend_from_slice(&len.to_le_bytes());
                return;
            }
            Kind::Char(len) => {
                out_type.push(254);
                meta.push(0xfe ^ (((len >> 8) as u8 & 0x3) << 4));
                meta.push(len as u8);
                return;
            }
            Kind::Blob(p) => (252, &[p]),
            Kind::Geometry(p) => (255, &[p]),
        };
        out_type.push(ty);
        meta.extend_from_slice(m);
    }
}

/// One column of the table as the events describe it.
struct Col<'a> {
    spec: &'a ColumnSpec,
    kind: Kind,
}

/// The table's columns 1..=n (n = the highest position in either image),
/// each known from the after or the before image.
fn table_of(rc: &RowsChange) -> Result<Vec<Col<'_>>, Unsupported> {
    let n = rc
        .columns
        .iter()
        .chain(&rc.keys)
        .map(|c| c.index)
        .max()
        .unwrap_or(0) as usize;
    if n == 0 {
        return Err(Unsupported("no columns".into()));
    }
    let mut specs: Vec<Option<&ColumnSpec>> = vec![None; n];
    for list in [&rc.columns, &rc.keys] {
        let mut last = 0;
        for c in list.iter() {
            if c.index <= last {
                return Err(Unsupported("row image columns out of order".into()));
            }
            last = c.index;
            let slot = &mut specs[c.index as usize - 1];
            match slot {
                Some(s) if s.type_code != c.type_code || s.length != c.length => {
                    return Err(Unsupported(format!(
                        "column {} differs between images",
                        c.name
                    )))
                }
                _ => *slot = Some(c),
            }
        }
    }
    specs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let spec = s.ok_or_else(|| {
                Unsupported(format!(
                    "column {} of {} is in neither row image",
                    i + 1,
                    rc.table
                ))
            })?;
            Ok(Col {
                spec,
                kind: Kind::of(spec)?,
            })
        })
        .collect()
}

fn name(out: &mut Vec<u8>, s: &str) -> Result<(), Unsupported> {
    let b = s.as_bytes();
    if b.len() > 255 {
        return Err(Unsupported(format!("name too long: {s}")));
    }
    out.push(b.len() as u8);
    out.extend_from_slice(b);
    out.push(0);
    Ok(())
}

fn bitmap(out: &mut Vec<u8>, n: usize, set: impl Iterator<Item = usize>) {
    let start = out.len();
    out.resize(start + n.div_ceil(8), 0);
    for i in set {
        out[start + i / 8] |= 1 << (i % 8);
    }
}

/// A group is closed after about this many bytes (so it fits one
/// `BINLOG` statement of about `batch::PIECE` bytes once base64 encoded).
pub const GROUP_BYTES: usize = 768 << 10;

/// Ids for the tables of one applier's events: one per distinct TABLE_MAP
/// body (schema, table, column types and metadata), kept for the
/// applier's life, so that events encoded for different transactions (on
/// the dispatcher's thread) can share one group later (on a channel's):
/// the same id always means the same table map. Each id's TABLE_MAP event
/// is encoded once and shared.
#[derive(Debug, Default)]
pub struct TableIds {
    by_body: std::collections::HashMap<Vec<u8>, (u64, Arc<[u8]>)>,
    last: u64,
}

/// The table maps kept before [`TableIds`] starts over (the ids go on
/// growing, so an id is never given to two tables).
const TABLE_IDS: usize = 1 << 16;

impl TableIds {
    /// The id and TABLE_MAP event for a table map body (after the id).
    fn get(&mut self, body: &[u8], server_id: u32, when: u32) -> (u64, Arc<[u8]>) {
        if let Some((id, ev)) = self.by_body.get(body) {
            return (*id, ev.clone());
        }
        if self.by_body.len() >= TABLE_IDS {
            self.by_body.clear();
        }
        self.last += 1;
        let id = self.last;
        let mut ev = Vec::with_capacity(body.len() + HEADER + 6 + CRC);
        event(&mut ev, TABLE_MAP, server_id, when, |b| {
            b.extend_from_slice(&id.to_le_bytes()[..6]);
            b.extend_from_slice(body);
        });
        let ev: Arc<[u8]> = ev.into();
        self.by_body.insert(body.to_vec(), (id, ev.clone()));
        (id, ev)
    }
}

/// One transaction's row events, not yet in groups: the TABLE_MAP event
/// of each table it touches and its rows events, none flagged
/// `STMT_END_F`. A [`Joiner`] puts them into groups.
#[derive(Debug, Clone, Default)]
pub struct TxEvents {
    /// Table id → its TABLE_MAP event, for each table of `rows`.
    pub maps: Vec<(u64, Arc<[u8]>)>,
    /// The rows events, whole (header to CRC), one after another.
    pub rows: Vec<u8>,
    /// Per rows event: its table id and where it ends in `rows`.
    pub ends: Vec<(u64, usize)>,
}

impl TxEvents {
    /// No rows events.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Encodes `changes` (one transaction's, in order) as rows events for
/// the tables `ids` names; a rows event closes after about
/// [`ROWS_EVENT_BYTES`].
pub fn encode_changes<'a>(
    ids: &mut TableIds,
    changes: impl IntoIterator<Item = &'a RowsChange>,
    server_id: u32,
    when: u32,
) -> Result<TxEvents, Unsupported> {
    let mut tx = TxEvents::default();
    for rc in changes {
        encode_change(&mut tx, ids, rc, server_id, when)?;
    }
    Ok(tx)
}

/// Appends the events applying `rc` (see [`append_changes`]).
pub fn append_change(
    out: &mut Vec<u8>,
    rc: &RowsChange,
    server_id: u32,
    when: u32,
) -> Result<Vec<usize>, Unsupported> {
    append_changes(out, [rc], server_id, when)
}

/// Appends the events applying `changes` in order, on their own: groups
/// of TABLE_MAP events followed by rows events (see [`Joiner`]). Returns
/// the offsets in `out` where each group ends. On error `out` is left as
/// it was.
pub fn append_changes<'a>(
    out: &mut Vec<u8>,
    changes: impl IntoIterator<Item = &'a RowsChange>,
    server_id: u32,
    when: u32,
) -> Result<Vec<usize>, Unsupported> {
    let tx = encode_changes(&mut TableIds::default(), changes, server_id, when)?;
    let mut j = Joiner::default();
    j.push(&tx);
    let (events, ends) = j.finish();
    let base = out.len();
    out.extend_from_slice(&events);
    Ok(ends.into_iter().map(|e| base + e).collect())
}

/// Joins transactions' events ([`TxEvents`], in order) into groups: the
/// TABLE_MAP event of each of the group's tables, then its rows events,
/// the last flagged `STMT_END_F` — what a primary writes for one statement
/// touching several tables. The server opens and locks a group's tables
/// once, so a block of transactions makes one group (or one per about
/// [`GROUP_BYTES`]) instead of one per transaction or per change.
#[derive(Debug, Default)]
pub struct Joiner {
    out: Vec<u8>,
    ends: Vec<usize>,
    /// The open group's tables, TABLE_MAP events and rows events.
    ids: Vec<u64>,
    maps: Vec<u8>,
    rows: Vec<u8>,
    /// Where the open group's last rows event starts in `rows`.
    last: Option<usize>,
}

impl Joiner {
    /// Adds a transaction's events to the open group (closing it on the
    /// way when it grows past [`GROUP_BYTES`]).
    pub fn push(&mut self, tx: &TxEvents) {
        let mut from = 0;
        for &(id, end) in &tx.ends {
            if !self.ids.contains(&id) {
                if let Some((_, ev)) = tx.maps.iter().find(|(i, _)| *i == id) {
                    self.maps.extend_from_slice(ev);
                }
                self.ids.push(id);
            }
            self.last = Some(self.rows.len());
            self.rows.extend_from_slice(&tx.rows[from..end]);
            from = end;
            if self.maps.len() + self.rows.len() >= GROUP_BYTES {
                self.close();
            }
        }
    }

    /// Nothing pushed yet (or only transactions without rows events).
    pub fn is_empty(&self) -> bool {
        self.out.is_empty() && self.last.is_none()
    }

    fn close(&mut self) {
        let Some(last) = self.last.take() else {
            return;
        };
        // the last rows event ends the statement: its flags (after the
        // 6-byte table id) and so its CRC change
        let ev = &mut self.rows[last..];
        let n = ev.len();
        ev[HEADER + 6..HEADER + 8].copy_from_slice(&STMT_END_F.to_le_bytes());
        let crc = crc32fast::hash(&ev[..n - CRC]);
        ev[n - CRC..].copy_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&self.maps);
        self.out.extend_from_slice(&self.rows);
        self.ends.push(self.out.len());
        self.ids.clear();
        self.maps.clear();
        self.rows.clear();
    }

    /// The groups, and where each ends.
    pub fn finish(mut self) -> (Vec<u8>, Vec<usize>) {
        self.close();
        (self.out, self.ends)
    }
}

/// Appends one change's rows events to `tx`.
fn encode_change(
    tx: &mut TxEvents,
    ids: &mut TableIds,
    rc: &RowsChange,
    server_id: u32,
    when: u32,
) -> Result<(), Unsupported> {
    if rc.rows.is_empty() {
        return Ok(());
    }
    let table = table_of(rc)?;
    let n = table.len();
    // the table map after its table id
    let mut tmap = Vec::with_capacity(64 + 3 * n);
    tmap.extend_from_slice(&1u16.to_le_bytes());
    name(&mut tmap, &rc.schema)?;
    name(&mut tmap, &rc.table)?;
    lenenc(&mut tmap, n as u64);
    let mut meta = Vec::with_capacity(2 * n);
    for c in &table {
        c.kind.table_map(&mut tmap, &mut meta);
    }
    lenenc(&mut tmap, meta.len() as u64);
    tmap.extend_from_slice(&meta);
    bitmap(
        &mut tmap,
        n,
        table
            .iter()
            .enumerate()
            .filter(|(_, c)| c.spec.nullable)
            .map(|(i, _)| i),
    );
    let pos =
        |list: &[ColumnSpec]| -> Vec<usize> { list.iter().map(|c| c.index as usize - 1).collect() };
    let (ty, before, after) = match rc.action {
        RowAction::Insert => (WRITE_ROWS_V1, None, Some(pos(&rc.columns))),
        RowAction::Update => (UPDATE_ROWS_V1, Some(pos(&rc.keys)), Some(pos(&rc.columns))),
        RowAction::Delete => (DELETE_ROWS_V1, Some(pos(&rc.keys)), None),
    };
    // the rows event's body up to its rows
    let mut head = Vec::with_capacity(16 + n / 4);
    lenenc(&mut head, n as u64);
    for cols in [&before, &after].into_iter().flatten() {
        bitmap(&mut head, n, cols.iter().copied());
    }
    // encoded apart, so that a refused row leaves `tx` as it was
    let mut body = Vec::new();
    let mut events: Vec<Vec<u8>> = Vec::new();
    for (k, row) in rc.rows.iter().enumerate() {
        if body.is_empty() {
            body.extend_from_slice(&head);
        }
        if let Some(cols) = &before {
            let v = row
                .before
                .as_deref()
                .ok_or_else(|| Unsupported(format!("row {k} has no before image")))?;
            append_image(&mut body, &table, cols, v)?;
        }
        if let Some(cols) = &after {
            let v = row
                .after
                .as_deref()
                .ok_or_else(|| Unsupported(format!("row {k} has no after image")))?;
            append_image(&mut body, &table, cols, v)?;
        }
        if body.len() >= ROWS_EVENT_BYTES {
            events.push(std::mem::take(&mut body));
        }
    }
    if !body.is_empty() {
        events.push(body);
    }
    let (id, map) = ids.get(&tmap, server_id, when);
    if !tx.maps.iter().any(|(i, _)| *i == id) {
        tx.maps.push((id, map));
    }
    for body in events {
        event(&mut tx.rows, ty, server_id, when, |b| {
            b.extend_from_slice(&id.to_le_bytes()[..6]);
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&body);
        });
        tx.ends.push((id, tx.rows.len()));
    }
    Ok(())
}

/// The events in `bytes` (type, and flags for rows events), each one's
/// size and CRC32 checked (for tests).
#[cfg(test)]
pub(crate) fn layout(bytes: &[u8]) -> Vec<(u8, Option<u16>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let size = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
        let (ev, next) = rest.split_at(size);
        let (data, crc) = ev.split_at(size - CRC);
        assert_eq!(
            crc32fast::hash(data).to_le_bytes(),
            crc,
            "CRC32 of event {}",
            out.len()
        );
        let flags = (ev[4] != TABLE_MAP && ev[4] != FORMAT_DESCRIPTION)
            .then(|| u16::from_le_bytes([ev[HEADER + 6], ev[HEADER + 7]]));
        out.push((ev[4], flags));
        rest = next;
    }
    out
}

/// An insert of `(id, 'x' × pad)` into `s.<table>` (for tests).
#[cfg(test)]
pub(crate) fn sample_insert(table: &str, id: i64, pad: usize) -> RowsChange {
    let spec = |index: u32, name: &str, type_code: u8, length: u32| ColumnSpec {
        index,
        name: name.into(),
        type_code,
        type_name: name.to_uppercase(),
        length,
        nullable: true,
        ..ColumnSpec::default()
    };
    RowsChange {
        schema: "s".into(),
        table: table.into(),
        action: RowAction::Insert,
        columns: vec![spec(1, "id", 3, 0), spec(2, "b", 252, 3)],
        keys: Vec::new(),
        rows: vec![crate::thl::RowChange {
            before: None,
            after: Some(vec![Value::Int(id), Value::bytes(vec![b'x'; pad])]),
        }],
    }
}

/// One row image: NULL bitmap over `cols`, then the non-NULL values.
fn append_image(
    out: &mut Vec<u8>,
    table: &[Col<'_>],
    cols: &[usize],
    values: &[Value],
) -> Result<(), Unsupported> {
    if values.len() != cols.len() {
        return Err(Unsupported(format!(
            "row image has {} values for {} columns",
            values.len(),
            cols.len()
        )));
    }
    bitmap(
        out,
        cols.len(),
        values
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Value::Null))
            .map(|(i, _)| i),
    );
    for (&c, v) in cols.iter().zip(values) {
        if !matches!(v, Value::Null) {
            let col = &table[c];
            append_value(out, col.kind, v)
                .map_err(|why| Unsupported(format!("column {}: {why}", col.spec.name)))?;
        }
    }
    Ok(())
}

fn be(out: &mut Vec<u8>, v: u64, bytes: usize) {
    out.extend_from_slice(&v.to_be_bytes()[8 - bytes..]);
}

fn le(out: &mut Vec<u8>, v: u64, bytes: usize) {
    out.extend_from_slice(&v.to_le_bytes()[..bytes]);
}

/// Fractional seconds as stored after the integer part of TIME2,
/// DATETIME2 and TIMESTAMP2 (big-endian, 0–3 bytes).
fn frac(out: &mut Vec<u8>, fsp: u8, micros: i64) {
    match fsp {
        1 | 2 => out.push((micros / 10_000) as u8),
        3 | 4 => be(out, (micros / 100) as u64, 2),
        5 | 6 => be(out, micros as u64, 3),
        _ => {}
    }
}

fn with_len(out: &mut Vec<u8>, data: &[u8], len_bytes: usize) -> Result<(), String> {
    if len_bytes < 8 && (data.len() as u64) >> (8 * len_bytes) != 0 {
        return Err(format!("{} bytes do not fit the column", data.len()));
    }
    le(out, data.len() as u64, len_bytes);
    out.extend_from_slice(data);
    Ok(())
}

/// Packs one non-NULL value of a column of kind `kind`.
fn append_value(out: &mut Vec<u8>, kind: Kind, v: &Value) -> Result<(), String> {
    let mismatch = || Err(format!("value {v:?} does not match the column type"));
    match (kind, v) {
        (Kind::Int(n), Value::Int(i)) => le(out, *i as u64, n),
        (Kind::Int(n), Value::UInt(u)) => le(out, *u, n),
        (Kind::Float, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Kind::Double, Value::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (Kind::Decimal { precision, scale }, Value::Decimal(text)) => {
            decimal(out, text, precision, scale)?
        }
        (Kind::Year, Value::Int(y)) if *y == 0 || (1901..=2155).contains(y) => {
            out.push(if *y == 0 { 0 } else { (*y - 1900) as u8 })
        }
        (Kind::Date, Value::Date(d)) => le(
            out,
            u64::from(d.day) | u64::from(d.month) << 5 | u64::from(d.year) << 9,
            3,
        ),
        (Kind::DateTime2(fsp), Value::DateTime(t)) => {
            let ym = u64::from(t.date.year) * 13 + u64::from(t.date.month);
            let ymd = ym << 5 | u64::from(t.date.day);
            let hms = u64::from(t.hour) << 12 | u64::from(t.minute) << 6 | u64::from(t.second);
            be(out, (ymd << 17 | hms) + 0x80_0000_0000, 5);
            frac(out, fsp, i64::from(t.micros));
        }
        (Kind::Timestamp2(fsp), Value::Timestamp(t))
            if (0..=u32::MAX as i64).contains(&t.seconds) =>
        {
            be(out, t.seconds as u64, 4);
            frac(out, fsp, i64::from(t.micros));
        }
        (Kind::Time2(fsp), Value::Time(t)) => {
            let hms = i64::from(t.hours) << 12 | i64::from(t.minutes) << 6 | i64::from(t.seconds);
            let mut packed = (hms << 24) + i64::from(t.micros);
            if t.negative {
                packed = -packed;
            }
            match fsp {
                5 | 6 => be(out, (packed + 0x8000_0000_0000) as u64, 6),
                _ => {
                    be(out, ((packed >> 24) + 0x80_0000) as u64, 3);
                    frac(out, fsp, packed % (1 << 24));
                }
            }
        }
        (Kind::Bit(bits), Value::Bit { data, .. }) => {
            let n = usize::from(bits).div_ceil(8);
            let skip = data.len().saturating_sub(n);
            if data[..skip].iter().any(|b| *b != 0) {
                return Err(format!("{} bytes do not fit BIT({bits})", data.len()));
            }
            out.resize(out.len() + n - (data.len() - skip), 0);
            out.extend_from_slice(&data[skip..]);
        }
        (Kind::Enum(p), Value::Enum(i)) => le(out, u64::from(*i), usize::from(p)),
        (Kind::Set(p), Value::Set(m)) => le(out, *m, usize::from(p)),
        (Kind::Varchar(max), Value::Bytes { data, .. }) => {
            with_len(out, data, if max < 256 { 1 } else { 2 })?
        }
        (Kind::Char(max), Value::Bytes { data, .. }) => {
            with_len(out, data, if max < 256 { 1 } else { 2 })?
        }
        (Kind::Blob(p) | Kind::Geometry(p), Value::Bytes { data, .. }) => {
            with_len(out, data, usize::from(p))?
        }
        (Kind::Blob(p), Value::Json(text)) => with_len(out, text.as_bytes(), usize::from(p))?,
        _ => return mismatch(),
    }
    Ok(())
}

/// Bytes of a group of 0–9 decimal digits.
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// DECIMAL(precision, scale) from its text (`-12.3400`) in the server's
/// binary form: the integer digits right-aligned and the fraction
/// left-aligned in groups of 9 (4 bytes each, big-endian, the partial group
/// of the integer part first and of the fraction last), every byte
/// inverted for a negative number, then the top bit of the first byte
/// flipped.
fn decimal(out: &mut Vec<u8>, text: &str, precision: u8, scale: u8) -> Result<(), String> {
    let bad = || format!("DECIMAL({precision},{scale}) cannot hold {text:?}");
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, fr) = digits.split_once('.').unwrap_or((digits, ""));
    if !int.bytes().chain(fr.bytes()).all(|b| b.is_ascii_digit()) || int.is_empty() && fr.is_empty()
    {
        return Err(bad());
    }
    let int = int.trim_start_matches('0');
    let (intg, fracd) = (usize::from(precision - scale), usize::from(scale));
    if int.len() > intg || fr.len() > fracd {
        return Err(bad());
    }
    let neg = neg && int.bytes().chain(fr.bytes()).any(|b| b != b'0');
    let mask: u64 = if neg { u64::MAX } else { 0 };
    let start = out.len();
    // integer digits, right-aligned to intg
    let padded_int: Vec<u8> = std::iter::repeat_n(0u8, intg - int.len())
        .chain(int.bytes().map(|b| b - b'0'))
        .collect();
    let lead = intg % 9;
    let mut groups: Vec<(&[u8], usize)> = Vec::new();
    if lead > 0 {
        groups.push((&padded_int[..lead], DIG2BYTES[lead]));
    }
    for g in padded_int[lead..].chunks(9) {
        groups.push((g, 4));
    }
    let padded_frac: Vec<u8> = fr
        .bytes()
        .map(|b| b - b'0')
        .chain(std::iter::repeat_n(0u8, fracd - fr.len()))
        .collect();
    for g in padded_frac.chunks(9) {
        groups.push((g, if g.len() == 9 { 4 } else { DIG2BYTES[g.len()] }));
    }
    for (g, bytes) in groups {
        let v = g.iter().fold(0u64, |a, d| a * 10 + u64::from(*d));
        be(out, (v ^ mask) & ((1u64 << (8 * bytes)) - 1), bytes);
    }
    if out.len() > start {
        out[start] ^= 0x80;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::values::convert;
    use crate::thl::{Date, DateTime, RowChange, Time, Timestamp};
    use mysql_common::binlog::consts::{BinlogVersion, EventType};
    use mysql_common::binlog::events::{EventData, TableMapEvent};
    use mysql_common::binlog::value::BinlogValue;
    use mysql_common::binlog::EventStreamReader;
    use mysql_common::io::ParseBuf;

    fn spec(index: u32, name: &str, ty: u8, length: u32, scale: u8) -> ColumnSpec {
        ColumnSpec {
            index,
            name: name.into(),
            type_code: ty,
            type_name: name.to_uppercase(),
            length,
            scale,
            nullable: true,
            ..ColumnSpec::default()
        }
    }

    fn image<'a>(
        buf: &mut ParseBuf<'a>,
        t: &'a TableMapEvent<'_>,
        specs: &[ColumnSpec],
        cols: &[usize],
    ) -> Vec<Value> {
        let bitmap: &[u8] = buf.checked_eat(cols.len().div_ceil(8)).expect("bitmap");
        let mut out = Vec::new();
        for (j, &i) in cols.iter().enumerate() {
            if bitmap[j / 8] & (1 << (j % 8)) != 0 {
                out.push(Value::Null);
                continue;
            }
            let ty = t.get_column_type(i).expect("type").expect("known");
            let meta = t.get_column_metadata(i).unwrap_or(&[]);
            let v: BinlogValue<'a> = buf
                .parse((ty, meta, specs[i].unsigned, false))
                .expect("value parses");
            out.push(convert(v, &specs[i]).expect("converts"));
        }
        out
    }

    /// Events → mysql_common's event and value parsers (as the extractor's
    /// `fast_rows` uses them) → the extractor's value conversion.
    #[allow(clippy::type_complexity)]
    fn decode(bytes: &[u8], specs: &[ColumnSpec]) -> Vec<(Option<Vec<Value>>, Option<Vec<Value>>)> {
        let mut esr = EventStreamReader::new(BinlogVersion::Version4);
        let mut all = format_description(7);
        all.extend_from_slice(bytes);
        let mut rest = &all[..];
        let mut tme: std::collections::HashMap<u64, TableMapEvent<'static>> = Default::default();
        let mut out = Vec::new();
        while !rest.is_empty() {
            let size = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
            let ev = esr
                .read(&rest[..size])
                .expect("event parses")
                .expect("an event");
            rest = &rest[size..];
            match ev.header().event_type().expect("known type") {
                EventType::FORMAT_DESCRIPTION_EVENT => {}
                EventType::TABLE_MAP_EVENT => {
                    let t = ev.read_event::<TableMapEvent>().expect("table map");
                    tme.insert(t.table_id(), t.into_owned());
                }
                _ => {
                    let Some(EventData::RowsEvent(rows)) = ev.read_data().expect("rows") else {
                        panic!("not a rows event");
                    };
                    let t = tme.get(&rows.table_id()).expect("table map first");
                    let n = t.columns_count() as usize;
                    assert_eq!(n, specs.len());
                    let bi = rows.columns_before_image().map(|b| {
                        (0..n)
                            .filter(|&i| b.get(i).is_some_and(|x| *x))
                            .collect::<Vec<_>>()
                    });
                    let ai = rows.columns_after_image().map(|b| {
                        (0..n)
                            .filter(|&i| b.get(i).is_some_and(|x| *x))
                            .collect::<Vec<_>>()
                    });
                    let mut buf = ParseBuf(rows.rows_data());
                    while !buf.0.is_empty() {
                        let b = bi.as_ref().map(|c| image(&mut buf, t, specs, c));
                        let a = ai.as_ref().map(|c| image(&mut buf, t, specs, c));
                        out.push((b, a));
                    }
                }
            }
        }
        out
    }

    fn all_types() -> (Vec<ColumnSpec>, Vec<Vec<Value>>) {
        let mut specs = vec![
            spec(1, "ti", 1, 0, 0),
            spec(2, "si", 2, 0, 0),
            spec(3, "mi", 9, 0, 0),
            spec(4, "i", 3, 0, 0),
            spec(5, "bi", 8, 0, 0),
            spec(6, "f", 4, 4, 0),
            spec(7, "d", 5, 8, 0),
            spec(8, "dec", 246, 20, 6),
            spec(9, "yr", 13, 4, 0),
            spec(10, "dt", 10, 0, 0),
            spec(11, "tm", 19, 0, 3),
            spec(12, "dtm", 18, 0, 6),
            spec(13, "ts", 17, 0, 6),
            spec(14, "bt", 16, 10, 0),
            spec(15, "en", 247, 1, 0),
            spec(16, "st", 248, 1, 0),
            spec(17, "vc", 15, 400, 0),
            spec(18, "c", 254, 40, 0),
            spec(19, "tx", 252, 2, 0),
            spec(20, "bu", 8, 0, 0),
            spec(21, "tm0", 19, 0, 0),
            spec(22, "dec2", 246, 5, 0),
        ];
        specs[19].unsigned = true;
        for i in [16, 17, 18] {
            specs[i].charset = Some(45);
        }
        specs[6].type_name = "DOUBLE".into();
        let row1 = vec![
            Value::Int(-128),
            Value::Int(-32768),
            Value::Int(-8388608),
            Value::Int(i64::from(i32::MIN)),
            Value::Int(i64::MIN),
            Value::Float(1.5),
            Value::Double(-2.5e300),
            Value::Decimal("-12345678901234.123456".into()),
            Value::Int(2155),
            Value::Date(Date {
                year: 2024,
                month: 2,
                day: 29,
            }),
            Value::Time(Time {
                negative: true,
                hours: 838,
                minutes: 59,
                seconds: 59,
                micros: 123_000,
            }),
            Value::DateTime(DateTime {
                date: Date {
                    year: 2024,
                    month: 2,
                    day: 29,
                },
                hour: 23,
                minute: 59,
                second: 59,
                micros: 999_999,
            }),
            Value::Timestamp(Timestamp {
                seconds: 2_147_483_647,
                micros: 500_000,
            }),
            Value::Bit {
                data: vec![0x02, 0xaa],
                bits: 10,
            },
            Value::Enum(2),
            Value::Set(5),
            Value::text("héllo wörld ☃ 🎉".repeat(5), Some(45)),
            Value::text("abc", Some(45)),
            Value::text("t".repeat(300), Some(45)),
            Value::UInt(u64::MAX),
            Value::Time(Time {
                negative: true,
                hours: 0,
                minutes: 0,
                seconds: 1,
                micros: 0,
            }),
            Value::Decimal("99999".into()),
        ];
        let row2 = vec![
            Value::Int(127),
            Value::Null,
            Value::Int(8388607),
            Value::Int(0),
            Value::Int(i64::MAX),
            Value::Float(-0.25),
            Value::Double(0.0),
            Value::Decimal("0.000001".into()),
            Value::Int(0),
            Value::Date(Date {
                year: 0,
                month: 0,
                day: 0,
            }),
            Value::Time(Time {
                negative: true,
                hours: 0,
                minutes: 0,
                seconds: 0,
                micros: 10_000,
            }),
            Value::DateTime(DateTime {
                date: Date {
                    year: 1000,
                    month: 1,
                    day: 1,
                },
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0,
            }),
            Value::Timestamp(Timestamp {
                seconds: 1,
                micros: 0,
            }),
            Value::Bit {
                data: vec![0x00, 0x00],
                bits: 10,
            },
            Value::Enum(0),
            Value::Set(0),
            Value::text("", Some(45)),
            Value::Null,
            Value::text("", Some(45)),
            Value::UInt(0),
            Value::Time(Time {
                negative: false,
                hours: 12,
                minutes: 34,
                seconds: 56,
                micros: 0,
            }),
            Value::Decimal("-1".into()),
        ];
        (specs, vec![row1, row2])
    }

    #[test]
    fn every_type_round_trips_through_mysql_common() {
        let (specs, rows) = all_types();
        let rc = RowsChange {
            schema: "app".into(),
            table: "types".into(),
            action: RowAction::Insert,
            columns: specs.clone(),
            keys: Vec::new(),
            rows: rows
                .iter()
                .map(|r| RowChange {
                    before: None,
                    after: Some(r.clone()),
                })
                .collect(),
        };
        let mut out = Vec::new();
        let ends = append_change(&mut out, &rc, 7, 0).expect("encodes");
        assert_eq!(ends, vec![out.len()]);
        let got = decode(&out, &specs);
        assert_eq!(got.len(), 2);
        for (g, want) in got.iter().zip(&rows) {
            assert_eq!(g.0, None);
            assert_eq!(g.1.as_ref(), Some(want));
        }
    }

    #[test]
    fn updates_carry_both_images_and_deletes_the_before_image() {
        let (specs, rows) = all_types();
        let mut rc = RowsChange {
            schema: "app".into(),
            table: "types".into(),
            action: RowAction::Update,
            columns: specs.clone(),
            keys: specs.clone(),
            rows: vec![RowChange {
                before: Some(rows[0].clone()),
                after: Some(rows[1].clone()),
            }],
        };
        let mut out = Vec::new();
        append_change(&mut out, &rc, 7, 0).expect("encodes");
        let got = decode(&out, &specs);
        assert_eq!(got, vec![(Some(rows[0].clone()), Some(rows[1].clone()))]);
        rc.action = RowAction::Delete;
        rc.columns.clear();
        rc.rows = vec![RowChange {
            before: Some(rows[1].clone()),
            after: None,
        }];
        out.clear();
        append_change(&mut out, &rc, 7, 0).expect("encodes");
        assert_eq!(decode(&out, &specs), vec![(Some(rows[1].clone()), None)]);
    }

    #[test]
    fn large_changes_become_several_groups() {
        let specs = vec![spec(1, "id", 3, 0, 0), spec(2, "b", 252, 3, 0)];
        let rows: Vec<RowChange> = (0..80)
            .map(|i| RowChange {
                before: None,
                after: Some(vec![Value::Int(i), Value::bytes(vec![b'x'; 20_000])]),
            })
            .collect();
        let rc = RowsChange {
            schema: "s".into(),
            table: "t".into(),
            action: RowAction::Insert,
            columns: specs.clone(),
            keys: Vec::new(),
            rows,
        };
        let mut out = Vec::new();
        let ends = append_change(&mut out, &rc, 7, 0).expect("encodes");
        // rows events of 14 rows of ~20 kB (ROWS_EVENT_BYTES), groups of 3
        // of them (GROUP_BYTES): 42 rows, then 38
        assert_eq!(ends.len(), 2, "{ends:?}");
        assert_eq!(ends.last(), Some(&out.len()));
        assert_eq!(decode(&out, &specs).len(), 80);
    }

    #[test]
    fn a_transaction_is_one_group_with_a_table_map_per_table() {
        let specs = vec![spec(1, "id", 3, 0, 0), spec(2, "v", 3, 0, 0)];
        let change = |table: &str, action, id: i64| RowsChange {
            schema: "s".into(),
            table: table.into(),
            action,
            columns: if action == RowAction::Delete {
                Vec::new()
            } else {
                specs.clone()
            },
            keys: if action == RowAction::Insert {
                Vec::new()
            } else {
                specs.clone()
            },
            rows: vec![RowChange {
                before: (action != RowAction::Insert).then(|| vec![Value::Int(id), Value::Int(0)]),
                after: (action != RowAction::Delete).then(|| vec![Value::Int(id), Value::Int(1)]),
            }],
        };
        let tx = [
            change("a", RowAction::Update, 1),
            change("b", RowAction::Delete, 2),
            change("a", RowAction::Insert, 3),
            change("b", RowAction::Insert, 4),
        ];
        let mut out = Vec::new();
        let ends = append_changes(&mut out, &tx, 7, 0).expect("encodes");
        assert_eq!(ends, vec![out.len()], "one group");
        // two table maps, then four rows events; only the last ends the statement
        assert_eq!(
            layout(&out),
            vec![
                (TABLE_MAP, None),
                (TABLE_MAP, None),
                (UPDATE_ROWS_V1, Some(0)),
                (DELETE_ROWS_V1, Some(0)),
                (WRITE_ROWS_V1, Some(0)),
                (WRITE_ROWS_V1, Some(STMT_END_F)),
            ]
        );
        let got = decode(&out, &specs);
        assert_eq!(got.len(), 4);
        assert_eq!(got[1], (Some(vec![Value::Int(2), Value::Int(0)]), None));
        assert_eq!(got[3], (None, Some(vec![Value::Int(4), Value::Int(1)])));
    }

    #[test]
    fn a_block_of_transactions_is_one_group_with_one_table_map_per_table() {
        let mut ids = TableIds::default();
        let txs: Vec<TxEvents> = [("a", 1), ("b", 2), ("a", 3)]
            .iter()
            .map(|&(t, id)| {
                encode_changes(&mut ids, [&sample_insert(t, id, 10)], 7, 0).expect("encodes")
            })
            .collect();
        assert_eq!(txs[0].maps[0].0, txs[2].maps[0].0, "a table keeps its id");
        assert_ne!(txs[0].maps[0].0, txs[1].maps[0].0);
        let mut j = Joiner::default();
        assert!(j.is_empty());
        txs.iter().for_each(|t| j.push(t));
        let (out, ends) = j.finish();
        assert_eq!(ends, vec![out.len()], "one group");
        assert_eq!(
            layout(&out),
            vec![
                (TABLE_MAP, None),
                (TABLE_MAP, None),
                (WRITE_ROWS_V1, Some(0)),
                (WRITE_ROWS_V1, Some(0)),
                (WRITE_ROWS_V1, Some(STMT_END_F)),
            ]
        );
        let specs = sample_insert("a", 0, 0).columns;
        let ids: Vec<_> = decode(&out, &specs)
            .into_iter()
            .map(|(_, a)| a.expect("after image")[0].clone())
            .collect();
        assert_eq!(ids, vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
        // a group closes once it passes GROUP_BYTES: three changes of
        // 400 kB make a group of two and one of one, each with its map
        let mut j = Joiner::default();
        for id in 0..3 {
            let big = sample_insert("a", id, 400_000);
            j.push(&encode_changes(&mut TableIds::default(), [&big], 7, 0).expect("encodes"));
        }
        let (out, ends) = j.finish();
        assert_eq!(ends.len(), 2, "{ends:?}");
        assert_eq!(
            layout(&out),
            vec![
                (TABLE_MAP, None),
                (WRITE_ROWS_V1, Some(0)),
                (WRITE_ROWS_V1, Some(STMT_END_F)),
                (TABLE_MAP, None),
                (WRITE_ROWS_V1, Some(STMT_END_F)),
            ]
        );
    }

    #[test]
    fn what_cannot_be_encoded_is_refused_and_leaves_nothing() {
        let mut rc = RowsChange {
            schema: "s".into(),
            table: "t".into(),
            action: RowAction::Insert,
            columns: vec![spec(1, "id", 3, 0, 0), spec(3, "v", 3, 0, 0)],
            keys: Vec::new(),
            rows: vec![RowChange {
                before: None,
                after: Some(vec![Value::Int(1), Value::Int(2)]),
            }],
        };
        let mut out = vec![9];
        let e = append_change(&mut out, &rc, 7, 0).unwrap_err();
        assert!(e.0.contains("column 2 of t is in neither row image"), "{e}");
        assert_eq!(out, vec![9]);
        rc.columns = vec![spec(1, "old", 12, 0, 0)];
        rc.rows[0].after = Some(vec![Value::Int(1)]);
        assert!(append_change(&mut out, &rc, 7, 0)
            .unwrap_err()
            .0
            .contains("no row-event encoding"));
        rc.columns = vec![spec(1, "d", 246, 5, 2)];
        rc.rows[0].after = Some(vec![Value::Decimal("1234.5".into())]);
        assert!(append_change(&mut out, &rc, 7, 0)
            .unwrap_err()
            .0
            .contains("cannot hold"));
        rc.columns = vec![spec(1, "i", 3, 0, 0)];
        rc.rows[0].after = Some(vec![Value::text("x", None)]);
        assert!(append_change(&mut out, &rc, 7, 0)
            .unwrap_err()
            .0
            .contains("does not match"));
        assert_eq!(out, vec![9]);
    }

    #[test]
    fn decimal_binary_form() {
        // DECIMAL(14,4) 1234567890.1234 → as in the MySQL manual's example
        // layout: int groups of 1 + 9 digits, fraction of 4.
        let mut out = Vec::new();
        decimal(&mut out, "1234567890.1234", 14, 4).expect("fits");
        assert_eq!(out, vec![0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2]);
        out.clear();
        decimal(&mut out, "-1234567890.1234", 14, 4).expect("fits");
        assert_eq!(out, vec![0x7e, 0xf2, 0x04, 0xc7, 0x2d, 0xfb, 0x2d]);
        out.clear();
        decimal(&mut out, "-0.00", 5, 2).expect("fits");
        decimal(&mut out, "0.00", 5, 2).expect("fits");
        assert_eq!(out[..3], out[3..], "negative zero is zero");
    }
}
