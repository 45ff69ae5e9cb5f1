//! Snapshots on disk: an embedded, crash-safe database (redb) in the data
//! directory, one protobuf-encoded `fdr.v1.Snapshot` per id, each committed
//! in its own transaction with its summary (`fdr.v1.SnapshotInfo`) in an
//! index table, so that listing and retention never decode a snapshot.
//! Retention by count and bytes evicts snapshots frozen for no incident
//! first, oldest first; incident evidence goes last.

use std::path::Path;

use fdr_proto::v1 as pb;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// id → encoded `SnapshotInfo` with `bytes` filled in.
const INDEX: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot_index");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_snapshot_id";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating data directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "opening snapshot database {path}: {source} (the file is left as it is; move it \
         away to start with an empty store)"
    )]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error(
        "snapshot database {path} is in use by another process (another fdr-agent on the \
         same data directory?)"
    )]
    Locked { path: String },
    #[error("snapshot database: {0}")]
    Db(String),
    #[error("snapshot {id} is corrupt: {source}")]
    Decode { id: u64, source: prost::DecodeError },
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Retention limits.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_snapshots: usize,
    pub max_bytes: u64,
}

pub struct Store {
    db: Database,
    retention: Retention,
    /// The next id to hand out; persisted with every commit.
    next: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) `dir/snapshots.redb`. A file that cannot be opened
    /// is an error, never replaced.
    pub fn open(dir: &Path, retention: Retention) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("snapshots.redb");
        let db = Database::create(&path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.display().to_string(),
            },
            source => StoreError::Open {
                path: path.display().to_string(),
                source,
            },
        })?;
        let tx = db.begin_write().map_err(db_err)?;
        let next = {
            let snaps = tx.open_table(SNAPSHOTS).map_err(db_err)?;
            let mut index = tx.open_table(INDEX).map_err(db_err)?;
            if index.len().map_err(db_err)? != snaps.len().map_err(db_err)? {
                rebuild_index(&snaps, &mut index)?;
            }
            let meta = tx.open_table(META).map_err(db_err)?;
            let stored = meta.get(NEXT_ID).map_err(db_err)?.map_or(1, |v| v.value());
            let after_last = snaps
                .last()
                .map_err(db_err)?
                .map_or(1, |(k, _)| k.value() + 1);
            stored.max(after_last)
        };
        tx.commit().map_err(db_err)?;
        Ok(Store {
            db,
            retention,
            next: std::sync::atomic::AtomicU64::new(next),
        })
    }

    /// A new snapshot id, larger than every committed one. Handed out in
    /// memory (freezing does no I/O) and persisted when a snapshot commits:
    /// an id of a snapshot that never committed (the agent died while it
    /// was open) may be handed out again.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// Stores a snapshot atomically, then applies retention: snapshots of
    /// no incident first, then incident ones, oldest first within each;
    /// never the one just stored. Returns the ids evicted.
    pub fn put(&self, snap: &pb::Snapshot) -> Result<Vec<u64>, StoreError> {
        let id = snap.info.as_ref().map_or(0, |i| i.id);
        let bytes = snap.encode_to_vec();
        let mut info = snap.info.clone().unwrap_or_default();
        info.bytes = bytes.len() as u64;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let stored = meta.get(NEXT_ID).map_err(db_err)?.map_or(1, |v| v.value());
            meta.insert(NEXT_ID, stored.max(id + 1)).map_err(db_err)?;
        }
        let evicted = {
            let mut t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
            let mut index = tx.open_table(INDEX).map_err(db_err)?;
            t.insert(id, bytes.as_slice()).map_err(db_err)?;
            index
                .insert(id, info.encode_to_vec().as_slice())
                .map_err(db_err)?;
            let mut entries = Vec::new();
            for r in index.iter().map_err(db_err)? {
                let (k, v) = r.map_err(db_err)?;
                let i = decode_info(k.value(), v.value())?;
                entries.push((i.incident != 0, i.id, i.bytes));
            }
            let mut count = entries.len();
            let mut total: u64 = entries.iter().map(|e| e.2).sum();
            // Incident evidence last, oldest first.
            entries.sort_unstable();
            let mut evicted = Vec::new();
            for (_, victim, size) in entries {
                if count <= self.retention.max_snapshots && total <= self.retention.max_bytes {
                    break;
                }
                if victim == id {
                    continue;
                }
                t.remove(victim).map_err(db_err)?;
                index.remove(victim).map_err(db_err)?;
                count -= 1;
                total -= size;
                evicted.push(victim);
            }
            evicted
        };
        tx.commit().map_err(db_err)?;
        Ok(evicted)
    }

    pub fn get(&self, id: u64) -> Result<Option<pb::Snapshot>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
        let Some(v) = t.get(id).map_err(db_err)? else {
            return Ok(None);
        };
        pb::Snapshot::decode(v.value())
            .map(Some)
            .map_err(|source| StoreError::Decode { id, source })
    }

    /// Summaries of every stored snapshot, oldest first (from the index:
    /// no snapshot is read).
    pub fn list(&self) -> Result<Vec<pb::SnapshotInfo>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(INDEX).map_err(db_err)?;
        let mut out = Vec::new();
        for r in t.iter().map_err(db_err)? {
            let (k, v) = r.map_err(db_err)?;
            out.push(decode_info(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The database, for the other tables (models, incidents).
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
        t.len().map_err(db_err)
    }
}

pub(crate) fn db_err<E: std::fmt::Display>(e: E) -> StoreError {
    db(e)
}

fn decode_info(id: u64, bytes: &[u8]) -> Result<pb::SnapshotInfo, StoreError> {
    pb::SnapshotInfo::decode(bytes).map_err(|source| StoreError::Decode { id, source })
}

/// Rebuilds the index from the snapshots themselves (a store written
/// before the index existed, or one whose index went missing).
fn rebuild_index(
    snaps: &redb::Table<u64, &[u8]>,
    index: &mut redb::Table<u64, &[u8]>,
) -> Result<(), StoreError> {
    let stale: Vec<u64> = index
        .iter()
        .map_err(db_err)?
        .map(|r| r.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
    for id in stale {
        index.remove(id).map_err(db_err)?;
    }
    let mut n = 0usize;
    for r in snaps.iter().map_err(db_err)? {
        let (k, v) = r.map_err(db_err)?;
        let id = k.value();
        let snap =
            pb::Snapshot::decode(v.value()).map_err(|source| StoreError::Decode { id, source })?;
        let mut info = snap.info.unwrap_or_default();
        info.id = id;
        info.bytes = v.value().len() as u64;
        index
            .insert(id, info.encode_to_vec().as_slice())
            .map_err(db_err)?;
        n += 1;
    }
    tracing::info!(snapshots = n, "snapshot index rebuilt");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: u64, payload: usize) -> pb::Snapshot {
        pb::Snapshot {
            info: Some(pb::SnapshotInfo {
                id,
                reason: "x".repeat(payload),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn dir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fdr-store-{tag}-{}", std::process::id()))
    }

    #[test]
    fn count_retention_evicts_oldest_and_ids_persist() {
        let d = dir("count");
        let _ = std::fs::remove_dir_all(&d);
        let store = Store::open(
            &d,
            Retention {
                max_snapshots: 100,
                max_bytes: u64::MAX,
            },
        )
        .unwrap();
        for _ in 0..100 {
            let id = store.next_id().unwrap();
            assert!(store.put(&snap(id, 10)).unwrap().is_empty());
        }
        let id = store.next_id().unwrap();
        assert_eq!(id, 101);
        assert_eq!(store.put(&snap(id, 10)).unwrap(), vec![1]);
        assert_eq!(store.count().unwrap(), 100);
        assert!(store.get(1).unwrap().is_none());
        assert_eq!(store.get(101).unwrap().unwrap().info.unwrap().id, 101);
        drop(store);
        let store = Store::open(
            &d,
            Retention {
                max_snapshots: 100,
                max_bytes: u64::MAX,
            },
        )
        .unwrap();
        assert_eq!(store.next_id().unwrap(), 102, "ids survive a restart");
        assert_eq!(store.list().unwrap().len(), 100);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn byte_retention_holds() {
        let d = dir("bytes");
        let _ = std::fs::remove_dir_all(&d);
        let store = Store::open(
            &d,
            Retention {
                max_snapshots: 100,
                max_bytes: 3000,
            },
        )
        .unwrap();
        for id in 1..=10 {
            store.put(&snap(id, 1000)).unwrap();
        }
        let total: u64 = store.list().unwrap().iter().map(|i| i.bytes).sum();
        assert!(total <= 3000, "{total}");
        assert_eq!(store.list().unwrap().last().unwrap().id, 10);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn incident_snap(id: u64, incident: u64) -> pb::Snapshot {
        let mut s = snap(id, 10);
        if let Some(i) = s.info.as_mut() {
            i.incident = incident;
        }
        s
    }

    #[test]
    fn incident_snapshots_are_evicted_last() {
        let d = dir("incident-last");
        let _ = std::fs::remove_dir_all(&d);
        let store = Store::open(
            &d,
            Retention {
                max_snapshots: 3,
                max_bytes: u64::MAX,
            },
        )
        .unwrap();
        let put = |id: u64, incident: u64| store.put(&incident_snap(id, incident)).unwrap();
        assert!(put(1, 7).is_empty());
        assert!(put(2, 0).is_empty());
        assert!(put(3, 0).is_empty());
        assert_eq!(put(4, 0), vec![2], "the oldest plain one, not incident 7's");
        assert_eq!(put(5, 8), vec![3]);
        assert_eq!(put(6, 0), vec![4]);
        assert_eq!(put(7, 9), vec![6]);
        // Only incident snapshots left: the oldest of them goes.
        assert_eq!(put(8, 10), vec![1]);
        let ids: Vec<(u64, u64)> = store
            .list()
            .unwrap()
            .iter()
            .map(|i| (i.id, i.incident))
            .collect();
        assert_eq!(ids, vec![(5, 8), (7, 9), (8, 10)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_store_without_its_index_gets_it_rebuilt() {
        let d = dir("reindex");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 10,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        for id in 1..=3 {
            store.put(&incident_snap(id, id * 10)).unwrap();
        }
        let before = store.list().unwrap();
        {
            let tx = store.database().begin_write().unwrap();
            tx.delete_table(INDEX).unwrap();
            tx.commit().unwrap();
        }
        drop(store);
        let store = Store::open(&d, r).unwrap();
        let after = store.list().unwrap();
        assert_eq!(after, before);
        assert_eq!(after.len(), 3);
        assert!(after.iter().all(|i| i.bytes > 0 && i.incident == i.id * 10));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_database_in_use_is_a_clear_error() {
        let d = dir("locked");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 1,
            max_bytes: 1,
        };
        let _first = Store::open(&d, r).unwrap();
        let err = Store::open(&d, r).err().expect("second open fails");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_left_alone() {
        let d = dir("corrupt");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("snapshots.redb");
        std::fs::write(&f, b"this is not a database, but somebody's data").unwrap();
        let err = Store::open(
            &d,
            Retention {
                max_snapshots: 1,
                max_bytes: 1,
            },
        )
        .err()
        .expect("error");
        assert!(err.to_string().contains("snapshots.redb"), "{err}");
        assert_eq!(
            std::fs::read(&f).unwrap(),
            b"this is not a database, but somebody's data"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
