//! The manager's durable raft storage: log, vote and state machine in one
//! redb file (`<dir>/manager.redb`).
//!
//! Layout (two redb tables, values JSON):
//!
//! | table | key | value |
//! |---|---|---|
//! | `log` | log index (u64) | `openraft::Entry<TypeConfig>` |
//! | `meta` | `vote` | `Vote<u64>` |
//! | `meta` | `committed` | `Option<LogId<u64>>` |
//! | `meta` | `purged` | `LogId<u64>`: the last log id removed from `log` |
//! | `meta` | `sm` | [`SmData`]: last applied log id, last membership, [`ClusterState`] |
//! | `meta` | `snapshot` | [`StoredSnapshot`]: the last snapshot built or installed |
//!
//! Every write is one redb transaction committed with immediate durability
//! (fsync) before openraft is told it is done, so an entry acknowledged to
//! the leader survives a crash. redb itself is crash-safe (copy-on-write
//! with a checksummed commit), so a torn write leaves the previous commit.
//!
//! openraft calls [`LogStore`] (the log and the vote) and [`StateMachine`]
//! (applies committed entries to the [`ClusterState`] and publishes each new
//! state on a watch channel: how the rest of the process learns of commits).
//! openraft's own storage test suite runs against both (`tests` below).

// openraft's traits return its `StorageError` (large); the helpers here
// return the same type rather than convert at every call.
#![allow(clippy::result_large_err)]

use super::TypeConfig;
use crate::state::{ClusterState, Outcome};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

type NodeId = u64;
type SErr = StorageError<NodeId>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn io_err(what: &str, e: impl std::fmt::Display) -> SErr {
    StorageIOError::write(AnyError::error(format!("{what}: {e}"))).into()
}

fn read_err(what: &str, e: impl std::fmt::Display) -> SErr {
    StorageIOError::read(AnyError::error(format!("{what}: {e}"))).into()
}

/// Opens (or creates) the store in `dir`.
pub fn open(dir: &Path) -> Result<Arc<Database>, SErr> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(&format!("create {}", dir.display()), e))?;
    let path = dir.join("manager.redb");
    let db = Database::create(&path).map_err(|e| io_err(&format!("open {}", path.display()), e))?;
    let w = db.begin_write().map_err(|e| io_err("begin", e))?;
    {
        w.open_table(LOG).map_err(|e| io_err("log table", e))?;
        w.open_table(META).map_err(|e| io_err("meta table", e))?;
    }
    w.commit().map_err(|e| io_err("commit", e))?;
    Ok(Arc::new(db))
}

fn get_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, SErr> {
    let r = db.begin_read().map_err(|e| read_err("begin read", e))?;
    let t = r.open_table(META).map_err(|e| read_err("meta table", e))?;
    let Some(v) = t.get(key).map_err(|e| read_err(key, e))? else {
        return Ok(None);
    };
    serde_json::from_slice(v.value())
        .map(Some)
        .map_err(|e| read_err(&format!("decode meta '{key}'"), e))
}

fn put_meta<T: Serialize>(db: &Database, key: &str, v: &T) -> Result<(), SErr> {
    let bytes = serde_json::to_vec(v).map_err(|e| io_err(key, e))?;
    let w = db.begin_write().map_err(|e| io_err("begin", e))?;
    {
        let mut t = w.open_table(META).map_err(|e| io_err("meta table", e))?;
        t.insert(key, bytes.as_slice())
            .map_err(|e| io_err(key, e))?;
    }
    w.commit().map_err(|e| io_err("commit", e))
}

/// The raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log in `db` (from [`open`]).
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let r = self
            .db
            .begin_read()
            .map_err(|e| read_err("begin read", e))?;
        let t = r.open_table(LOG).map_err(|e| read_err("log table", e))?;
        let mut out = Vec::new();
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(i) => Some(i - 1),
            Bound::Unbounded => None,
        };
        let iter = match end {
            Some(end) if end < start => return Ok(Vec::new()),
            Some(end) => t.range(start..=end),
            None => t.range(start..),
        };
        for item in iter.map_err(|e| read_err("log range", e))? {
            let (_, v) = item.map_err(|e| read_err("log entry", e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| read_err("decode entry", e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let purged: Option<LogId<NodeId>> = get_meta(&self.db, "purged")?;
        let r = self
            .db
            .begin_read()
            .map_err(|e| read_err("begin read", e))?;
        let t = r.open_table(LOG).map_err(|e| read_err("log table", e))?;
        let last = match t.last().map_err(|e| read_err("last entry", e))? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> =
                    serde_json::from_slice(v.value()).map_err(|e| read_err("decode entry", e))?;
                Some(e.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        put_meta(&self.db, "vote", vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        get_meta(&self.db, "vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        put_meta(&self.db, "committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(get_meta::<Option<LogId<NodeId>>>(&self.db, "committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = (|| {
            let w = self.db.begin_write().map_err(|e| io_err("begin", e))?;
            {
                let mut t = w.open_table(LOG).map_err(|e| io_err("log table", e))?;
                for e in entries {
                    let bytes = serde_json::to_vec(&e).map_err(|x| io_err("encode entry", x))?;
                    t.insert(e.log_id.index, bytes.as_slice())
                        .map_err(|x| io_err("append", x))?;
                }
            }
            w.commit().map_err(|e| io_err("commit", e))
        })();
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let w = self.db.begin_write().map_err(|e| io_err("begin", e))?;
        {
            let mut t = w.open_table(LOG).map_err(|e| io_err("log table", e))?;
            t.retain_in(log_id.index.., |_, _| false)
                .map_err(|e| io_err("truncate", e))?;
        }
        w.commit().map_err(|e| io_err("commit", e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let bytes = serde_json::to_vec(&log_id).map_err(|e| io_err("purged", e))?;
        let w = self.db.begin_write().map_err(|e| io_err("begin", e))?;
        {
            let mut m = w.open_table(META).map_err(|e| io_err("meta table", e))?;
            m.insert("purged", bytes.as_slice())
                .map_err(|e| io_err("purged", e))?;
            let mut t = w.open_table(LOG).map_err(|e| io_err("log table", e))?;
            t.retain_in(..=log_id.index, |_, _| false)
                .map_err(|e| io_err("purge", e))?;
        }
        w.commit().map_err(|e| io_err("commit", e))
    }
}

/// What the state machine keeps: the applied position, the membership and
/// the cluster state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    /// Last log id applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// Last membership applied.
    pub last_membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// The cluster state.
    pub state: ClusterState,
}

/// A snapshot as stored: its meta and the [`SmData`] JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The state machine: applies committed entries, publishes the state.
pub struct StateMachine {
    db: Arc<Database>,
    data: SmData,
    publish: watch::Sender<Arc<ClusterState>>,
}

impl StateMachine {
    /// The state machine in `db`, restored from its last applied state;
    /// each applied state is sent on `publish`.
    pub fn new(db: Arc<Database>, publish: watch::Sender<Arc<ClusterState>>) -> Result<Self, SErr> {
        let data: SmData = get_meta(&db, "sm")?.unwrap_or_default();
        publish.send_replace(Arc::new(data.state.clone()));
        Ok(StateMachine { db, data, publish })
    }

    fn save(&self) -> Result<(), SErr> {
        put_meta(&self.db, "sm", &self.data)?;
        self.publish.send_replace(Arc::new(self.data.state.clone()));
        Ok(())
    }
}

/// Builds snapshots from a copy of the state machine's data.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    data: SmData,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let data = serde_json::to_vec(&self.data).map_err(|e| io_err("encode snapshot", e))?;
        let id = match &self.data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.data.state.changes),
            None => format!("none-{}", self.data.state.changes),
        };
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.last_membership.clone(),
            snapshot_id: id,
        };
        put_meta(
            &self.db,
            "snapshot",
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        SErr,
    > {
        Ok((self.data.last_applied, self.data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Outcome::Unchanged),
                EntryPayload::Normal(cmd) => out.push(self.data.state.apply(&cmd)),
                EntryPayload::Membership(m) => {
                    self.data.last_membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Outcome::Unchanged);
                }
            }
        }
        self.save()?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            data: self.data.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let bytes = snapshot.into_inner();
        let data: SmData =
            serde_json::from_slice(&bytes).map_err(|e| read_err("decode snapshot", e))?;
        self.data = SmData {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            state: data.state,
        };
        put_meta(
            &self.db,
            "snapshot",
            &StoredSnapshot {
                meta: meta.clone(),
                data: bytes,
            },
        )?;
        self.save()
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let s: Option<StoredSnapshot> = get_meta(&self.db, "snapshot")?;
        Ok(s.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), SErr> {
            let dir = tempfile::tempdir().map_err(|e| io_err("tempdir", e))?;
            let db = open(dir.path())?;
            let (tx, _) = watch::channel(Arc::new(ClusterState::default()));
            let sm = StateMachine::new(db.clone(), tx)?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    #[test]
    fn openraft_storage_suite() -> Result<(), SErr> {
        Suite::test_all(Builder)
    }

    #[tokio::test]
    async fn state_survives_reopen() -> Result<(), SErr> {
        use crate::state::{Change, Command};
        let dir = tempfile::tempdir().map_err(|e| io_err("tempdir", e))?;
        let cmd = Command {
            change: Change::SetPolicy(carbide_config::PolicyMode::Manual),
            reason: "test".into(),
            by: "db1".into(),
            at_ms: 5,
        };
        {
            let db = open(dir.path())?;
            let (tx, _) = watch::channel(Arc::new(ClusterState::default()));
            let mut sm = StateMachine::new(db.clone(), tx)?;
            let entry = Entry::<TypeConfig> {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
                payload: EntryPayload::Normal(cmd),
            };
            sm.apply([entry]).await?;
            LogStore::new(db).save_vote(&Vote::new(3, 1)).await?;
        }
        let db = open(dir.path())?;
        let (tx, rx) = watch::channel(Arc::new(ClusterState::default()));
        let mut sm = StateMachine::new(db.clone(), tx)?;
        assert_eq!(rx.borrow().policy, Some(carbide_config::PolicyMode::Manual));
        let (applied, _) = sm.applied_state().await?;
        assert_eq!(applied.map(|l| l.index), Some(1));
        assert_eq!(LogStore::new(db).read_vote().await?, Some(Vote::new(3, 1)));
        Ok(())
    }
}
