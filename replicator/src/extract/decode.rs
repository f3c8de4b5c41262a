//! Binlog events → [`Decoded`] items, one event at a time.
//!
//! mysql_common [`Event`]s enter [`Decoder::decode`] (from the network
//! stream or from a file, see `file.rs`); out come the few things the
//! transaction builder (`txn.rs`) cares about: GTIDs, statements with their
//! session context, row changes with column specs and THL values, commits.
//! The decoder keeps the TABLE_MAP cache (table id → columns). When a
//! TABLE_MAP lacks column names (`binlog_row_metadata` not FULL) or a
//! primary key (the unique keys are in information_schema only) and the
//! [`SchemaCache`] does not know the table, it answers
//! [`Decoded::NeedColumns`]; the caller reads information_schema and calls
//! [`Decoder::resolve_columns`] before feeding more events.

use super::columns::{has_full_metadata, has_primary_key, table_columns, InfoColumn, SchemaCache};
use super::mariadb_events as maria;
use super::values;
use crate::thl::{ColumnSpec, RowAction, RowChange, RowsChange, SessionVars, Statement, Timestamp};
use mysql_common::binlog::consts::{EventType, IntvarEventType};
use mysql_common::binlog::events::{
    AnonymousGtidEvent, Event, EventData, GtidEvent, IntvarEvent, QueryEvent, RandEvent,
    RotateEvent, RowsEventData, StatusVarVal, TableMapEvent,
};
use std::collections::HashMap;
use std::sync::Arc;

/// What a statement does to the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `BEGIN`: opens a transaction.
    Begin,
    /// `COMMIT`: ends it.
    Commit,
    /// `ROLLBACK`: ends it (non-transactional changes stay).
    Rollback,
    /// DDL or statement-based DML.
    Other,
}

/// One decoded binlog event, as the transaction builder sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A real rotation to a new binlog file.
    Rotate {
        /// New file name.
        file: String,
        /// Position in it.
        pos: u64,
    },
    /// The start of a transaction with a GTID.
    Gtid {
        /// `domain-server-seq` (MariaDB) or `uuid:gno` (MySQL).
        gtid: String,
        /// No BEGIN/COMMIT follow: the transaction ends after one statement.
        standalone: bool,
        /// A MariaDB GTID (no BEGIN follows; XID or COMMIT ends it).
        mariadb: bool,
    },
    /// A query event.
    Query {
        /// BEGIN/COMMIT/ROLLBACK or a statement.
        kind: QueryKind,
        /// The statement with its context.
        stmt: Statement,
    },
    /// Row changes to one table.
    Rows(RowsChange),
    /// XID: commit of a transactional transaction.
    Xid,
    /// INTVAR for the next statement.
    Intvar {
        /// True for INSERT_ID, false for LAST_INSERT_ID.
        insert_id: bool,
        /// The value.
        value: u64,
    },
    /// RAND seeds for the next statement.
    Rand(u64, u64),
    /// The source is alive (no new events).
    Heartbeat,
    /// A TABLE_MAP without column names, or without a primary key, for a
    /// table the schema cache lacks.
    NeedColumns {
        /// Table id to resolve.
        table_id: u64,
        /// Schema.
        schema: String,
        /// Table.
        table: String,
    },
    /// Nothing the pipeline needs (FDE, GTID_LIST, checkpoints, annotations…).
    Ignored,
}

struct TableEntry {
    tme: TableMapEvent<'static>,
    schema: String,
    table: String,
    columns: Option<Arc<Vec<ColumnSpec>>>,
}

/// Stateful event decoder for one binlog stream.
pub struct Decoder {
    tables: HashMap<u64, TableEntry>,
    /// information_schema columns, used when the binlog lacks metadata.
    pub schema_cache: SchemaCache,
    seen_fde: bool,
    strip_fake_rotate_checksum: bool,
}

impl Decoder {
    /// A decoder; `strip_fake_rotate_checksum` when the stream's first
    /// (artificial) ROTATE carries a checksum before any FDE announced it
    /// (MariaDB with binlog_checksum=CRC32; mysql_async issue #189).
    pub fn new(strip_fake_rotate_checksum: bool) -> Self {
        Decoder {
            tables: HashMap::new(),
            schema_cache: SchemaCache::default(),
            seen_fde: false,
            strip_fake_rotate_checksum,
        }
    }

    /// Supplies columns after [`Decoded::NeedColumns`]; `None` when they
    /// cannot be had (columns then have empty names and decode by type only).
    pub fn resolve_columns(
        &mut self,
        table_id: u64,
        info: Option<Vec<InfoColumn>>,
    ) -> Result<(), String> {
        let Some(entry) = self.tables.get_mut(&table_id) else {
            return Ok(());
        };
        if let Some(cols) = &info {
            self.schema_cache
                .put(&entry.schema, &entry.table, cols.clone());
        }
        let specs = table_columns(&entry.tme, info.as_deref())
            .map_err(|e| format!("table {}.{}: {e}", entry.schema, entry.table))?;
        entry.columns = Some(Arc::new(specs));
        Ok(())
    }

    /// Decodes one event. `Err` carries what is wrong (the caller adds the position).
    pub fn decode(&mut self, ev: &Event) -> Result<Decoded, String> {
        let h = ev.header();
        let raw = h.event_type_raw();
        match raw {
            maria::GTID => {
                let g = maria::parse_gtid(ev.data(), h.server_id())?;
                return Ok(Decoded::Gtid {
                    gtid: g.gtid.to_string(),
                    standalone: g.standalone(),
                    mariadb: true,
                });
            }
            maria::GTID_LIST | maria::BINLOG_CHECKPOINT | maria::ANNOTATE_ROWS => {
                return Ok(Decoded::Ignored)
            }
            maria::START_ENCRYPTION => return Err(
                "the binlog is encrypted (START_ENCRYPTION); encrypted binlogs are not supported"
                    .into(),
            ),
            t if maria::is_compressed(t) => {
                let plain = maria::decompress_event(ev, ev.fde())?;
                return self.decode(&plain);
            }
            _ => {}
        }
        let Ok(et) = h.event_type() else {
            return Ok(Decoded::Ignored);
        };
        match et {
            EventType::FORMAT_DESCRIPTION_EVENT => {
                self.seen_fde = true;
                Ok(Decoded::Ignored)
            }
            EventType::ROTATE_EVENT => {
                let mut name = ev
                    .read_event::<RotateEvent<'_>>()
                    .map(|r| (r.name_raw().to_vec(), r.position()))
                    .map_err(|e| format!("ROTATE: {e}"));
                if name.is_err() && !self.seen_fde {
                    // The fake ROTATE before the FDE may carry an unannounced checksum.
                    name = Ok((ev.data().get(8..).unwrap_or_default().to_vec(), 4));
                }
                let (mut bytes, pos) = name?;
                if !self.seen_fde && self.strip_fake_rotate_checksum && bytes.len() > 4 {
                    bytes.truncate(bytes.len() - 4);
                }
                // A new file: its table ids start afresh.
                self.tables.clear();
                Ok(Decoded::Rotate {
                    file: String::from_utf8_lossy(&bytes).into_owned(),
                    pos,
                })
            }
            EventType::QUERY_EVENT => {
                let q: QueryEvent<'_> = ev.read_event().map_err(|e| format!("QUERY: {e}"))?;
                Ok(query(&q, h.timestamp()))
            }
            EventType::XID_EVENT => Ok(Decoded::Xid),
            EventType::INTVAR_EVENT => {
                let iv: IntvarEvent = ev.read_event().map_err(|e| format!("INTVAR: {e}"))?;
                Ok(Decoded::Intvar {
                    insert_id: iv.subtype() == IntvarEventType::INSERT_ID_EVENT,
                    value: iv.value(),
                })
            }
            EventType::RAND_EVENT => {
                let r: RandEvent = ev.read_event().map_err(|e| format!("RAND: {e}"))?;
                Ok(Decoded::Rand(*r.seed1, *r.seed2))
            }
            EventType::HEARTBEAT_EVENT => Ok(Decoded::Heartbeat),
            EventType::GTID_EVENT => {
                let g: GtidEvent = ev.read_event().map_err(|e| format!("GTID: {e}"))?;
                Ok(Decoded::Gtid {
                    gtid: format!("{}:{}", uuid_text(&g.sid()), g.gno()),
                    standalone: false,
                    mariadb: false,
                })
            }
            EventType::ANONYMOUS_GTID_EVENT => {
                let _g: AnonymousGtidEvent = ev
                    .read_event()
                    .map_err(|e| format!("ANONYMOUS_GTID: {e}"))?;
                Ok(Decoded::Gtid {
                    gtid: String::new(),
                    standalone: false,
                    mariadb: false,
                })
            }
            EventType::INCIDENT_EVENT => Err(
                "INCIDENT event: the source reports that changes may be missing from its binlog"
                    .into(),
            ),
            EventType::TABLE_MAP_EVENT => {
                let tme: TableMapEvent<'_> =
                    ev.read_event().map_err(|e| format!("TABLE_MAP: {e}"))?;
                let tme = tme.into_owned();
                let table_id = tme.table_id();
                let schema = tme.database_name().into_owned();
                let table = tme.table_name().into_owned();
                let known = self.schema_cache.get(&schema, &table).cloned();
                // without a primary key, information_schema may name a
                // unique NOT NULL key to match rows by
                let full = has_full_metadata(&tme) && has_primary_key(&tme);
                let columns = if full || known.is_some() {
                    let specs = table_columns(&tme, known.as_deref())
                        .map_err(|e| format!("table {schema}.{table}: {e}"))?;
                    Some(Arc::new(specs))
                } else {
                    None
                };
                let need = columns.is_none();
                self.tables.insert(
                    table_id,
                    TableEntry {
                        tme,
                        schema: schema.clone(),
                        table: table.clone(),
                        columns,
                    },
                );
                Ok(if need {
                    Decoded::NeedColumns {
                        table_id,
                        schema,
                        table,
                    }
                } else {
                    Decoded::Ignored
                })
            }
            EventType::WRITE_ROWS_EVENT_V1
            | EventType::UPDATE_ROWS_EVENT_V1
            | EventType::DELETE_ROWS_EVENT_V1
            | EventType::WRITE_ROWS_EVENT
            | EventType::UPDATE_ROWS_EVENT
            | EventType::DELETE_ROWS_EVENT
            | EventType::PARTIAL_UPDATE_ROWS_EVENT => {
                let data = ev.read_data().map_err(|e| format!("{et:?}: {e}"))?;
                let Some(EventData::RowsEvent(rows)) = data else {
                    return Err(format!("{et:?}: not a rows event"));
                };
                self.rows(&rows, et)
            }
            _ => Ok(Decoded::Ignored),
        }
    }

    fn rows(&self, rows: &RowsEventData<'_>, et: EventType) -> Result<Decoded, String> {
        let table_id = rows.table_id();
        let entry = self.tables.get(&table_id).ok_or_else(|| {
            format!("{et:?} for table id {table_id} without a preceding TABLE_MAP")
        })?;
        let cols = entry.columns.as_ref().ok_or_else(|| {
            format!(
                "no column metadata for {}.{} (resolve_columns was not called)",
                entry.schema, entry.table
            )
        })?;
        let action = match et {
            EventType::WRITE_ROWS_EVENT_V1 | EventType::WRITE_ROWS_EVENT => RowAction::Insert,
            EventType::DELETE_ROWS_EVENT_V1 | EventType::DELETE_ROWS_EVENT => RowAction::Delete,
            _ => RowAction::Update,
        };
        let n = cols.len();
        let before_idx: Vec<usize> = rows
            .columns_before_image()
            .map(|b| (0..n).filter(|&i| b.get(i).is_some_and(|x| *x)).collect())
            .unwrap_or_default();
        let after_idx: Vec<usize> = rows
            .columns_after_image()
            .map(|b| (0..n).filter(|&i| b.get(i).is_some_and(|x| *x)).collect())
            .unwrap_or_default();
        let pick =
            |idx: &[usize]| -> Vec<ColumnSpec> { idx.iter().map(|&i| cols[i].clone()).collect() };
        let keys = pick(&before_idx);
        let columns = pick(&after_idx);
        if et != EventType::PARTIAL_UPDATE_ROWS_EVENT {
            let rows_out = fast_rows(
                rows.rows_data(),
                &entry.tme,
                cols,
                rows.columns_before_image().map(|_| before_idx.as_slice()),
                rows.columns_after_image().map(|_| after_idx.as_slice()),
            )
            .map_err(|e| format!("{et:?} row of {}.{}: {e}", entry.schema, entry.table))?;
            return Ok(Decoded::Rows(RowsChange {
                schema: entry.schema.clone(),
                table: entry.table.clone(),
                action,
                columns,
                keys,
                rows: rows_out,
            }));
        }
        // PARTIAL_UPDATE_ROWS (JSON diffs): mysql_common's row parser
        let mut out = Vec::new();
        for r in rows.rows(&entry.tme) {
            let (before, after) =
                r.map_err(|e| format!("{et:?} row of {}.{}: {e}", entry.schema, entry.table))?;
            let conv = |row: Option<mysql_common::binlog::row::BinlogRow>,
                        specs: &[ColumnSpec]|
             -> Result<Option<Vec<crate::thl::Value>>, String> {
                let Some(row) = row else { return Ok(None) };
                let vals = row.unwrap();
                if vals.len() != specs.len() {
                    return Err(format!(
                        "row of {}.{} has {} values for {} columns",
                        entry.schema,
                        entry.table,
                        vals.len(),
                        specs.len()
                    ));
                }
                vals.into_iter()
                    .zip(specs)
                    .map(|(v, c)| values::convert(v, c))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            };
            out.push(RowChange {
                before: conv(before, &keys)?,
                after: conv(after, &columns)?,
            });
        }
        Ok(Decoded::Rows(RowsChange {
            schema: entry.schema.clone(),
            table: entry.table.clone(),
            action,
            columns,
            keys,
            rows: out,
        }))
    }
}

/// Parses the row images of a rows event without mysql_common's per-row
/// metadata work (it rebuilds column descriptions for every row): for each
/// image, a NULL bitmap over the present columns, then their values.
fn fast_rows<'a>(
    data: &'a [u8],
    tme: &'a TableMapEvent<'a>,
    cols: &[ColumnSpec],
    before: Option<&[usize]>,
    after: Option<&[usize]>,
) -> Result<Vec<RowChange>, String> {
    use mysql_common::binlog::value::BinlogValue;
    use mysql_common::io::ParseBuf;
    let n = cols.len();
    let mut types = Vec::with_capacity(n);
    let mut metas = Vec::with_capacity(n);
    for i in 0..n {
        let t = tme
            .get_column_type(i)
            .map_err(|e| format!("column {}: {e}", i + 1))?
            .ok_or_else(|| format!("column {} has no type", i + 1))?;
        types.push(t);
        metas.push(tme.get_column_metadata(i).unwrap_or(&[]));
    }
    let mut buf = ParseBuf(data);
    let image = |buf: &mut ParseBuf<'a>, idx: &[usize]| -> Result<Vec<crate::thl::Value>, String> {
        let nb = idx.len().div_ceil(8);
        let bitmap: &[u8] = buf
            .checked_eat(nb)
            .ok_or_else(|| "row image shorter than its NULL bitmap".to_string())?;
        let mut vals = Vec::with_capacity(idx.len());
        for (j, &i) in idx.iter().enumerate() {
            if bitmap[j / 8] & (1 << (j % 8)) != 0 {
                vals.push(crate::thl::Value::Null);
                continue;
            }
            let ctx = (types[i], metas[i], cols[i].unsigned, false);
            let v: BinlogValue<'a> = buf
                .parse(ctx)
                .map_err(|e| format!("column {} ({}): {e}", cols[i].name, cols[i].type_name))?;
            vals.push(values::convert(v, &cols[i])?);
        }
        Ok(vals)
    };
    let mut out = Vec::new();
    while !buf.is_empty() {
        let b = match before {
            Some(idx) => Some(image(&mut buf, idx)?),
            None => None,
        };
        let a = match after {
            Some(idx) => Some(image(&mut buf, idx)?),
            None => None,
        };
        out.push(RowChange {
            before: b,
            after: a,
        });
    }
    Ok(out)
}

/// `aabbccdd-…` text of a 16-byte UUID.
pub fn uuid_text(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

const OPTION_NOT_AUTOCOMMIT: u32 = 0x0008_0000;
const OPTION_NO_FOREIGN_KEY_CHECKS: u32 = 0x0400_0000;
const OPTION_RELAXED_UNIQUE_CHECKS: u32 = 0x0800_0000;

fn query(q: &QueryEvent<'_>, ts: u32) -> Decoded {
    let sql = q.query_raw();
    let head: String = String::from_utf8_lossy(&sql[..sql.len().min(16)])
        .trim()
        .to_ascii_uppercase();
    let kind = match head.trim_end_matches(';') {
        "BEGIN" => QueryKind::Begin,
        "COMMIT" => QueryKind::Commit,
        "ROLLBACK" => QueryKind::Rollback,
        _ => QueryKind::Other,
    };
    let mut s = SessionVars {
        timestamp: Some(Timestamp {
            seconds: ts as i64,
            micros: 0,
        }),
        ..SessionVars::default()
    };
    for var in q.status_vars().iter() {
        match var.get_value() {
            Ok(StatusVarVal::Flags2(f)) => {
                let f = f.0;
                s.autocommit = Some(f & OPTION_NOT_AUTOCOMMIT == 0);
                s.foreign_key_checks = Some(f & OPTION_NO_FOREIGN_KEY_CHECKS == 0);
                s.unique_checks = Some(f & OPTION_RELAXED_UNIQUE_CHECKS == 0);
            }
            Ok(StatusVarVal::SqlMode(m)) => s.sql_mode = Some(m.0),
            Ok(StatusVarVal::AutoIncrement { increment, offset }) => {
                s.auto_increment_increment = Some(increment);
                s.auto_increment_offset = Some(offset);
            }
            Ok(StatusVarVal::Charset {
                charset_client,
                collation_connection,
                collation_server,
            }) => {
                s.charset_client = Some(charset_client);
                s.collation_connection = Some(collation_connection);
                s.collation_server = Some(collation_server);
            }
            Ok(StatusVarVal::TimeZone(tz)) => s.time_zone = Some(tz.as_str().into_owned()),
            Ok(StatusVarVal::Microseconds(us)) => {
                if let Some(t) = s.timestamp.as_mut() {
                    t.micros = us;
                }
            }
            _ => {}
        }
    }
    let schema = q.schema();
    Decoded::Query {
        kind,
        stmt: Statement {
            sql: sql.to_vec(),
            default_schema: (!schema.is_empty()).then(|| schema.into_owned()),
            session: s,
        },
    }
}
