//! `tungsten_<service>.trep_commit_seqno`: where a replica stands.
//!
//! One row per apply channel (`task_id` = channel number), each holding
//! the last transaction that channel committed (Tungsten's columns). The
//! applier's channels write their row in the same database transaction as
//! their data ([`update_row_sql`], pure); [`ensure_catalog`],
//! [`load_rows`], [`reshape`] and [`set_position`] (dsctl, trepctl) read
//! and write the rows over a connection. The position a replica restarts
//! from is the row with the lowest seqno ([`ensure_catalog`] returns it).

use super::plan::StoredRow;
use super::sql;
use crate::extract::{service_schema, service_tag};
use crate::thl::{now_us, ThlEvent};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// Where a replica stands, from `trep_commit_seqno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Last applied seqno (-1 = none).
    pub seqno: i64,
    /// Its eventid.
    pub eventid: String,
    /// Its epoch.
    pub epoch: i64,
}

/// What a row records of a transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mark {
    /// Seqno (-1 = none).
    pub seqno: i64,
    /// Epoch (-1 = unknown).
    pub epoch: i64,
    /// Eventid.
    pub eventid: String,
    /// Source id.
    pub source_id: String,
    /// Shard.
    pub shard: String,
    /// Commit time on the source (µs; 0 = unknown).
    pub source_tstamp: i64,
    /// Extraction time (µs; 0 = unknown).
    pub extract_tstamp: i64,
}

impl Mark {
    /// The mark of a whole transaction.
    pub fn of(tx: &ThlEvent) -> Mark {
        Mark {
            seqno: tx.seqno as i64,
            epoch: tx.epoch as i64,
            eventid: tx.eventid.clone(),
            source_id: tx.source_id.clone(),
            shard: tx.shard.clone(),
            source_tstamp: tx.source_tstamp,
            extract_tstamp: tx.extract_tstamp,
        }
    }
}

/// A stored row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelRow {
    /// Channel number.
    pub task_id: u32,
    /// What it records (timestamps not read back).
    pub mark: Mark,
}

/// `CREATE TABLE` of `trep_commit_seqno` (Tungsten's columns).
pub fn trep_commit_seqno_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{schema}`.trep_commit_seqno (\
         task_id INT NOT NULL, seqno BIGINT, fragno SMALLINT, last_frag CHAR(1), \
         source_id VARCHAR(128), epoch_number BIGINT, eventid VARCHAR(128), \
         applied_latency INT, update_timestamp TIMESTAMP NULL, shard_id VARCHAR(128), \
         extract_timestamp TIMESTAMP NULL, PRIMARY KEY (task_id)) ENGINE=InnoDB"
    )
}

fn ts(us: i64) -> String {
    format!(
        "{}.{:06}",
        us.div_euclid(1_000_000),
        us.rem_euclid(1_000_000)
    )
}

/// The `UPDATE` that records `m` in channel `task_id`'s row (a literal
/// statement, so it can travel in the same multi-statement query as the
/// block's rows).
pub fn update_row_sql(schema: &str, task_id: usize, m: &Mark) -> String {
    let latency = if m.source_tstamp > 0 {
        ((now_us() - m.source_tstamp) / 1_000_000).max(0)
    } else {
        0
    };
    let extract = if m.extract_tstamp > 0 {
        format!("FROM_UNIXTIME({})", ts(m.extract_tstamp))
    } else {
        "NULL".into()
    };
    format!(
        "UPDATE `{schema}`.trep_commit_seqno SET seqno = {}, fragno = 0, last_frag = '1', \
         source_id = {}, epoch_number = {}, eventid = {}, applied_latency = {latency}, \
         update_timestamp = NOW(), shard_id = {}, extract_timestamp = {extract} \
         WHERE task_id = {task_id}",
        m.seqno,
        sql::string_literal(&m.source_id),
        m.epoch,
        sql::string_literal(&m.eventid),
        sql::string_literal(&m.shard),
    )
}

fn e(err: mysql_async::Error) -> String {
    err.to_string()
}

/// Creates the service schema and `trep_commit_seqno` (with the row of
/// task 0 at seqno -1) if missing; returns the position the replica
/// restarts from (the row with the lowest seqno).
pub async fn ensure_catalog(conn: &mut Conn, service: &str) -> Result<Position, String> {
    let schema = service_schema(service);
    // tagged like applied statements, so that another service extracting
    // from this database leaves them out
    let tag = service_tag(service);
    conn.query_drop(format!("{tag}CREATE DATABASE IF NOT EXISTS `{schema}`"))
        .await
        .map_err(e)?;
    conn.query_drop(format!("{tag}{}", trep_commit_seqno_ddl(&schema)))
        .await
        .map_err(e)?;
    conn.query_drop(format!(
        "INSERT IGNORE INTO `{schema}`.trep_commit_seqno (task_id, seqno, fragno, last_frag, \
         epoch_number, eventid) SELECT 0, -1, 0, '1', -1, '' FROM DUAL WHERE NOT EXISTS \
         (SELECT 1 FROM `{schema}`.trep_commit_seqno)"
    ))
    .await
    .map_err(e)?;
    let rows = load_rows(conn, service).await?;
    let low = rows.iter().min_by_key(|r| r.mark.seqno);
    Ok(low.map_or(
        Position {
            seqno: -1,
            eventid: String::new(),
            epoch: -1,
        },
        |r| Position {
            seqno: r.mark.seqno,
            eventid: r.mark.eventid.clone(),
            epoch: r.mark.epoch,
        },
    ))
}

/// Every row, by task_id.
pub async fn load_rows(conn: &mut Conn, service: &str) -> Result<Vec<ChannelRow>, String> {
    let schema = service_schema(service);
    type Row = (
        i64,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT task_id, seqno, epoch_number, eventid, source_id, shard_id \
             FROM `{schema}`.trep_commit_seqno ORDER BY task_id"
        ))
        .await
        .map_err(e)?;
    Ok(rows
        .into_iter()
        .map(|(task, seqno, epoch, eventid, source, shard)| ChannelRow {
            task_id: task.clamp(0, i64::from(u32::MAX)) as u32,
            mark: Mark {
                seqno: seqno.unwrap_or(-1),
                epoch: epoch.unwrap_or(-1),
                eventid: eventid.unwrap_or_default(),
                source_id: source.unwrap_or_default(),
                shard: shard.unwrap_or_default(),
                source_tstamp: 0,
                extract_tstamp: 0,
            },
        })
        .collect())
}

/// The rows as the planner sees them.
pub fn stored(rows: &[ChannelRow]) -> Vec<StoredRow> {
    rows.iter()
        .map(|r| StoredRow {
            task_id: r.task_id,
            seqno: r.mark.seqno,
        })
        .collect()
}

/// Makes exactly `channels` rows, every one recording `like` (in one
/// transaction).
pub async fn reshape(
    conn: &mut Conn,
    service: &str,
    channels: usize,
    like: &Mark,
) -> Result<(), String> {
    let schema = service_schema(service);
    let mut q =
        format!("BEGIN; DELETE FROM `{schema}`.trep_commit_seqno WHERE task_id >= {channels}");
    for c in 0..channels {
        q.push_str(&format!(
            "; INSERT IGNORE INTO `{schema}`.trep_commit_seqno (task_id) VALUES ({c}); {}",
            update_row_sql(&schema, c, like)
        ));
    }
    q.push_str("; COMMIT");
    let r = conn.query_drop(q).await.map_err(e);
    if r.is_err() {
        let _ = conn.query_drop("ROLLBACK").await;
    }
    r
}

/// Sets every row to the same position (dsctl set / reset): a replica
/// positioned this way resumes at `p` whatever its channel count.
pub async fn set_position(
    conn: &mut Conn,
    service: &str,
    p: &Position,
    source_id: &str,
) -> Result<(), String> {
    ensure_catalog(conn, service).await?;
    let schema = service_schema(service);
    conn.exec_drop(
        format!(
            "UPDATE `{schema}`.trep_commit_seqno SET seqno = ?, fragno = 0, last_frag = '1', \
             source_id = ?, epoch_number = ?, eventid = ?, update_timestamp = NOW(), \
             shard_id = NULL, extract_timestamp = NULL"
        ),
        (p.seqno, source_id, p.epoch, p.eventid.as_str()),
    )
    .await
    .map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_update_is_a_literal_statement() {
        let m = Mark {
            seqno: 42,
            epoch: 7,
            eventid: "mariadb-bin.000001:0000000000000400;-1".into(),
            source_id: "db'1".into(),
            shard: "app".into(),
            source_tstamp: 0,
            extract_tstamp: 1_500_000,
        };
        let q = update_row_sql("tungsten_alpha", 3, &m);
        assert!(q.starts_with("UPDATE `tungsten_alpha`.trep_commit_seqno SET seqno = 42,"));
        assert!(q.contains("source_id = _utf8mb4 X'64622731'"), "{q}");
        assert!(q.contains("epoch_number = 7,"));
        assert!(q.contains("extract_timestamp = FROM_UNIXTIME(1.500000)"));
        assert!(q.ends_with("WHERE task_id = 3"));
    }
}
