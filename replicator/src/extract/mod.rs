//! The extractor: binlog events in, THL transactions out.
//!
//! Events enter [`Pipeline::on_event`] from the source database's binlog
//! stream (`source.rs`, a replication client) or from binlog files
//! (`file.rs`, for MySQL 8 recordings and benchmarks). The pipeline decodes
//! them (`decode.rs`, with MariaDB's own events in `mariadb_events.rs`,
//! column metadata in `columns.rs` and values in `values.rs`), groups them
//! into transactions (`txn.rs`) and hands out whole [`ThlEvent`]s with the
//! next seqno, the Tungsten eventid (`position.rs`), source id and
//! metadata. The caller appends them to a `ThlWriter` and commits.

mod columns;
mod decode;
mod error;
pub mod file;
pub mod mariadb_events;
mod position;
pub mod source;
mod txn;
pub(crate) mod values;

pub use columns::{choose_unique_key, InfoColumn, SchemaCache, INFO_COLUMNS_SQL, UNIQUE_KEYS_SQL};
pub use decode::{Decoded, Decoder, QueryKind};
pub use error::{ExtractError, Result};
pub use position::{resume_from_thl, BinlogPos, Resume, StartPosition};
pub use source::{ExtractorConfig, Progress, SourceOpts, StopRequest};
pub use txn::{Completed, TxBuilder, UNKNOWN_SHARD};

use crate::thl::{now_us, Change, ThlEvent, Value};
use mysql_common::binlog::events::Event;

/// Schema of a service's own tables (heartbeat): `tungsten_<service>`.
pub fn service_schema(service: &str) -> String {
    format!("tungsten_{service}")
}

/// Metadata key naming the heartbeat a transaction carries.
pub const HEARTBEAT_META: &str = "heartbeat";

/// What one event produced.
#[derive(Debug)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// Columns of a table must be read from information_schema, then
    /// passed to [`Pipeline::resolve_columns`].
    NeedColumns {
        /// Table id.
        table_id: u64,
        /// Schema.
        schema: String,
        /// Table.
        table: String,
    },
    /// A whole transaction to append.
    Transaction(Box<ThlEvent>),
    /// The source sent a heartbeat (it is alive, nothing new).
    Heartbeat,
}

/// Identity stamped on every extracted transaction.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Service name (metadata `service`).
    pub service: String,
    /// Source id (member name).
    pub source_id: String,
    /// Epoch: the seqno at which this extraction began.
    pub epoch: u64,
}

/// Decoder + transaction builder + seqno/eventid assignment.
pub struct Pipeline {
    decoder: Decoder,
    builder: TxBuilder,
    ident: Identity,
    heartbeat_schema: String,
    next_seqno: u64,
    pos: BinlogPos,
}

impl Pipeline {
    /// A pipeline that will give the next transaction `next_seqno`, reading
    /// from `pos` (the file is replaced by the first ROTATE).
    pub fn new(
        ident: Identity,
        next_seqno: u64,
        pos: BinlogPos,
        strip_rotate_checksum: bool,
    ) -> Self {
        Pipeline {
            decoder: Decoder::new(strip_rotate_checksum),
            builder: TxBuilder::new(),
            heartbeat_schema: service_schema(&ident.service),
            ident,
            next_seqno,
            pos,
        }
    }

    /// Starts over on a new connection: forgets a partial transaction and
    /// table maps (schema cache kept), positions at `pos`.
    pub fn restart(&mut self, pos: BinlogPos, strip_rotate_checksum: bool) {
        let cache = std::mem::take(&mut self.decoder.schema_cache);
        self.decoder = Decoder::new(strip_rotate_checksum);
        self.decoder.schema_cache = cache;
        self.builder.reset();
        self.pos = pos;
    }

    /// Current binlog position (after the last event seen).
    pub fn position(&self) -> &BinlogPos {
        &self.pos
    }

    /// Seqno the next transaction gets.
    pub fn next_seqno(&self) -> u64 {
        self.next_seqno
    }

    /// True while a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.builder.in_transaction()
    }

    /// See [`Step::NeedColumns`].
    pub fn resolve_columns(&mut self, table_id: u64, info: Option<Vec<InfoColumn>>) -> Result<()> {
        self.decoder
            .resolve_columns(table_id, info)
            .map_err(|what| ExtractError::Decode {
                position: self.pos.to_string(),
                what,
            })
    }

    /// Feeds one binlog event.
    pub fn on_event(&mut self, ev: &Event) -> Result<Step> {
        let h = ev.header();
        let decoded = self
            .decoder
            .decode(ev)
            .map_err(|what| ExtractError::Decode {
                position: format!("{}:{}", self.pos.file, self.pos.pos),
                what,
            })?;
        let is_fde = h.event_type_raw() == 15;
        match &decoded {
            Decoded::Rotate { file, pos } => {
                self.pos = BinlogPos::new(file.clone(), *pos);
            }
            _ if !is_fde && h.log_pos() as u64 > self.pos.pos => {
                self.pos.pos = h.log_pos() as u64;
            }
            _ => {}
        }
        match decoded {
            Decoded::NeedColumns {
                table_id,
                schema,
                table,
            } => {
                return Ok(Step::NeedColumns {
                    table_id,
                    schema,
                    table,
                })
            }
            Decoded::Heartbeat => return Ok(Step::Heartbeat),
            _ => {}
        }
        let done = self
            .builder
            .push(decoded, h.timestamp(), h.server_id())
            .map_err(|what| ExtractError::Decode {
                position: self.pos.to_string(),
                what,
            })?;
        let Some(tx) = done else {
            return Ok(Step::Nothing);
        };
        if tx.has_ddl {
            self.decoder.schema_cache.clear();
        }
        Ok(Step::Transaction(Box::new(self.stamp(tx))))
    }

    fn stamp(&mut self, tx: Completed) -> ThlEvent {
        let seqno = self.next_seqno;
        self.next_seqno += 1;
        let mut ev = ThlEvent::new(seqno, self.ident.epoch, self.pos.eventid());
        ev.source_id = self.ident.source_id.clone();
        ev.shard = tx.shard.clone();
        ev.source_tstamp = tx.commit_ts as i64 * 1_000_000;
        ev.extract_tstamp = now_us();
        ev.metadata
            .push(("server_id".into(), tx.server_id.to_string()));
        if let Some(g) = &tx.gtid {
            ev.metadata.push(("gtid".into(), g.clone()));
        }
        ev.metadata.push(("dbms_type".into(), "mysql".into()));
        ev.metadata
            .push(("service".into(), self.ident.service.clone()));
        ev.metadata.push(("shard".into(), tx.shard));
        if let Some(name) = heartbeat_name(&tx.changes, &self.heartbeat_schema) {
            ev.metadata.push((HEARTBEAT_META.into(), name));
        }
        ev.changes = tx.changes;
        ev
    }
}

/// The `name` column of a row written to `<schema>.heartbeat`, if any.
fn heartbeat_name(changes: &[Change], schema: &str) -> Option<String> {
    changes.iter().find_map(|c| match c {
        Change::Rows(r) if r.schema == schema && r.table == "heartbeat" => {
            let i = r.columns.iter().position(|c| c.name == "name")?;
            let row = r.rows.last()?.after.as_ref()?;
            match row.get(i)? {
                Value::Bytes { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
                _ => None,
            }
        }
        _ => None,
    })
}
