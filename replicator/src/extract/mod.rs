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

/// The tag an applier puts before each statement it runs (as Tungsten's
/// applier does): `/* ___SERVICE___ = [<service>] */ `. Row changes need
/// none: the applier updates `tungsten_<service>.trep_commit_seqno` in the
/// same transaction.
pub fn service_tag(service: &str) -> String {
    format!("{TAG_OPEN}{service}] */ ")
}

const TAG_OPEN: &str = "/* ___SERVICE___ = [";

/// The other service whose applier wrote a transaction into this binlog,
/// if any: its rows touch `tungsten_<that>.trep_commit_seqno`, or a
/// statement starts with that service's [`service_tag`]. The extractor of
/// `own` leaves such transactions out, so that services replicating in
/// both directions between two databases (`east` from A to B, `west` from
/// B to A) do not send each other's transactions back.
pub fn applied_by_other<'a>(changes: &'a [Change], own: &str) -> Option<&'a str> {
    changes.iter().find_map(|c| {
        let name = match c {
            Change::Rows(r) if r.table == "trep_commit_seqno" => r.schema.strip_prefix("tungsten_"),
            Change::Rows(_) => None,
            Change::Statement(s) => s
                .sql
                .strip_prefix(TAG_OPEN.as_bytes())
                .and_then(|rest| rest.split(|&b| b == b']').next())
                .and_then(|n| std::str::from_utf8(n).ok()),
        };
        name.filter(|n| *n != own)
    })
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
    /// Services whose transactions were left out (each logged once).
    others: Vec<String>,
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
            others: Vec::new(),
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
        if let Some(other) = applied_by_other(&tx.changes, &self.ident.service) {
            if !self.others.iter().any(|o| o == other) {
                tracing::info!(
                    service = %self.ident.service, other, position = %self.pos,
                    "leaving out transactions applied here by another service's replicator \
                     (they are that service's)"
                );
                self.others.push(other.to_string());
            }
            tracing::debug!(other, position = %self.pos, "left out: applied by another service");
            return Ok(Step::Nothing);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thl::{RowAction, RowsChange, Statement};

    fn rows(schema: &str, table: &str) -> Change {
        Change::Rows(RowsChange {
            schema: schema.into(),
            table: table.into(),
            action: RowAction::Update,
            columns: Vec::new(),
            keys: Vec::new(),
            rows: Vec::new(),
        })
    }

    #[test]
    fn another_services_applied_transactions_are_recognised() {
        let data = rows("app", "t");
        let marked = rows("tungsten_west", "trep_commit_seqno");
        assert_eq!(
            applied_by_other(&[data.clone(), marked.clone()], "east"),
            Some("west")
        );
        // our own applier's marker, other tungsten tables, plain data: ours
        assert_eq!(applied_by_other(&[data.clone(), marked], "west"), None);
        assert_eq!(
            applied_by_other(&[rows("tungsten_west", "heartbeat")], "east"),
            None
        );
        assert_eq!(applied_by_other(&[data], "east"), None);
        let tagged = format!("{}CREATE TABLE app.t (id INT)", service_tag("west"));
        let st = |sql: &str| Change::Statement(Statement::new(sql));
        assert_eq!(applied_by_other(&[st(&tagged)], "east"), Some("west"));
        assert_eq!(applied_by_other(&[st(&tagged)], "west"), None);
        // only a leading tag counts (user text may contain anything)
        let inside = format!(
            "CREATE TABLE app.t (id INT) COMMENT '{}'",
            service_tag("west")
        );
        assert_eq!(applied_by_other(&[st(&inside)], "east"), None);
    }
}
