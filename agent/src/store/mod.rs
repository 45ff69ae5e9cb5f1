//! Stage 6, store: the agent's database — an embedded, crash-safe redb
//! file in the data directory holding snapshots, runtime models and
//! incidents, as `fdr.v1` messages — and its committer thread
//! ([`commit`]), through which every write goes, off the event path.
//!
//! Takes: encoded snapshots, and model/incident writes (closures over the
//! store) from analysis and the recorder. Gives: ids, reads, storage
//! health, and the OTLP export's sender its access to the outbox kept in
//! the same database ([`outbox`]). Imports: the foundation only. It sits
//! below analysis and the recorder because both write into it while they
//! run.
//!
//! Snapshots: one per id, interned and compressed ([`compact`]; those of
//! earlier versions, plain `fdr.v1.Snapshot` messages, read as before),
//! each committed in its own transaction with its summary (`fdr.v1.SnapshotInfo`) in an
//! index table, so that listing and retention never decode a snapshot.
//! Retention by count and bytes evicts snapshots frozen for no incident
//! first, oldest first; incident evidence goes last.
//!
//! Writes happen on the committer thread ([`commit`]). A failed write
//! (a full disk, an I/O error) leaves redb unusable until the database is
//! closed and opened again: [`Store::reopen`] does that, and the store's
//! [`StorageHealth`] says whether writes currently succeed. Reads never
//! panic: a panic inside redb (a corrupt page) becomes an error naming what
//! was read.
//!
//! Ids are reserved durably before they are handed out: a lease (the
//! high-water mark below which ids may have been handed out) is persisted
//! first, and [`Store::open`] starts above it, so an id is never handed out
//! twice, even across a crash. The committer renews the lease when half of
//! it is used; freezing itself never does I/O.

pub mod commit;
pub mod compact;
pub mod outbox;
pub mod seal;

use std::{
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// id → encoded `SnapshotInfo` with `bytes` filled in.
const INDEX: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot_index");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// id → encoded `SnapshotInfo` of a snapshot frozen and not yet committed:
/// one left at open belonged to an agent that died with it open.
const OPEN_MARKS: TableDefinition<u64, &[u8]> = TableDefinition::new("open_snapshots");
/// "instance_id" → the agent's instance id (see [`Store::instance_id`]);
/// "node" → the node name of the agent that last started on it (see
/// [`Store::set_node`]).
const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
const INSTANCE_ID: &str = "instance_id";
const NODE: &str = "node";
const NEXT_ID: &str = "next_snapshot_id";
/// Snapshot ids below it may have been handed out.
const ID_LEASE: &str = "snapshot_id_lease";
/// Incident serials below it may have been handed out.
pub(crate) const SERIAL_LEASE: &str = "incident_serial_lease";
/// Written by the health probe (a small write that tells whether the disk
/// takes writes again when nothing else is waiting).
const PROBE: &str = "health_probe";

/// Snapshot ids reserved at a time; renewed when half are used.
pub const ID_LEASE_SIZE: u64 = 64;
/// Incident serials reserved at a time; renewed when half are used.
pub const SERIAL_LEASE_SIZE: u64 = 256;

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
    Decode {
        id: u64,
        source: compact::FormatError,
    },
    #[error("reading {what} from the database failed (is the file corrupt?): {detail}")]
    Corrupt { what: String, detail: String },
    #[error("the database is not open (storage failing: {0}); retrying")]
    Unavailable(String),
    #[error(
        "no snapshot id is reserved: the store cannot persist the next lease ({0}); \
         snapshots can be created again once the disk takes writes"
    )]
    NoIdReserved(String),
    #[error("drawing random bytes from the kernel: {0}")]
    Random(std::io::Error),
    #[error("the agent's signing key {path}: {detail}")]
    Key { path: String, detail: String },
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

/// Whether the store takes writes, for `GetStats` and the health service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageHealth {
    /// The last write (or reopen) succeeded.
    pub ok: bool,
    /// The last write error ("" when none ever happened); kept after a
    /// recovery, for the record.
    pub last_error: String,
    /// Wall-clock ns when the current state (ok / failing) began.
    pub since_ns: u64,
    /// Failed writes since the agent started.
    pub failures: u64,
    /// Times the database was closed and opened again after a failure.
    pub reopens: u64,
    /// The integrity check's result at open: "ok", "repaired", "corrupt: …",
    /// or "skipped: …".
    pub integrity: String,
}

use crate::util::now_ns;

/// Ids handed out from a durably reserved range.
#[derive(Debug, Default)]
struct Lease {
    /// The next id to hand out (snapshots), or the next serial the
    /// incidents reported (serials).
    next: AtomicU64,
    /// Persisted: ids below it may have been handed out.
    reserved: AtomicU64,
}

pub use compact::{Encoded, Writer};

pub struct Store {
    path: PathBuf,
    /// `None` while being reopened (or when reopening failed).
    db: RwLock<Option<Arc<Database>>>,
    retention: Retention,
    ids: Lease,
    serials: Lease,
    health: Mutex<StorageHealth>,
    /// A read hit a panic or a latched I/O error: the committer reopens.
    reopen_wanted: AtomicBool,
    /// One reopen at a time.
    reopening: Mutex<()>,
    /// Snapshots stored, and evicted by retention, since the agent started
    /// (its metrics).
    committed: AtomicU64,
    evicted: AtomicU64,
    /// Created with the database (see [`Store::instance_id`]).
    instance_id: String,
    /// Signs each committed snapshot's seal ([`seal`]).
    /// `None` for a copy served offline without its key file: nothing is
    /// sealed with a key that is not the agent's.
    sealer: Option<seal::Sealer>,
}

/// The text of a caught panic.
fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// redb's page cache. Its default (1 GiB) would let the store's reads and
/// writes grow the agent past any memory limit a pod is given; snapshots
/// are written once and read rarely, so a small cache costs little.
const DB_CACHE_BYTES: usize = 32 << 20;

/// Opens (or creates) the database; redb's repair of a damaged file may
/// panic: that is an error naming the file.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    let opened = std::panic::catch_unwind(|| {
        Database::builder()
            .set_cache_size(DB_CACHE_BYTES)
            .create(path)
    })
    .map_err(|p| StoreError::Corrupt {
        what: format!(
            "{} (the file is left as it is; move it away to start with an empty store)",
            path.display()
        ),
        detail: panic_text(p),
    })?;
    opened.map_err(|source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.display().to_string(),
        },
        source => StoreError::Open {
            path: path.display().to_string(),
            source,
        },
    })
}

impl Store {
    /// Opens (or creates) `dir/snapshots.redb`, checks its integrity and
    /// reserves the first ids. A file that cannot be opened is an error,
    /// never replaced.
    pub fn open(dir: &Path, retention: Retention) -> Result<Self, StoreError> {
        Self::open_as(dir, retention, true)
    }

    /// [`Store::open`] of a database served offline (a stopped agent's, a
    /// dead node's): its `signing.key` is used when the copy has it, and
    /// never created.
    pub fn open_offline(dir: &Path, retention: Retention) -> Result<Self, StoreError> {
        Self::open_as(dir, retention, false)
    }

    fn open_as(dir: &Path, retention: Retention, create_key: bool) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("snapshots.redb");
        let mut db = open_db(&path)?;
        let t = Instant::now();
        let integrity = match std::panic::catch_unwind(AssertUnwindSafe(|| db.check_integrity())) {
            Ok(Ok(true)) => "ok".to_owned(),
            Ok(Ok(false)) => {
                tracing::warn!(path = %path.display(), "snapshot database failed its integrity check and was repaired");
                "repaired".to_owned()
            }
            Ok(Err(err)) => {
                tracing::error!(path = %path.display(), %err, "snapshot database failed its integrity check");
                format!("corrupt: {err}")
            }
            Err(p) => {
                let p = panic_text(p);
                tracing::error!(path = %path.display(), panic = %p, "snapshot database integrity check crashed");
                format!("corrupt: {p}")
            }
        };
        tracing::info!(result = %integrity, ms = t.elapsed().as_millis() as u64, "snapshot database integrity checked");
        if integrity != "ok" {
            // A failed check discards redb's allocator state: open again
            // (which repairs what it can).
            drop(db);
            db = open_db(&path)?;
        }
        let sealer = if create_key || dir.join(seal::KEY_FILE).exists() {
            Some(seal::Sealer::load_or_create(dir)?)
        } else {
            tracing::warn!(dir = %dir.display(), "no signing key in the copy: nothing it stores is sealed");
            None
        };
        let guarded =
            std::panic::catch_unwind(AssertUnwindSafe(|| init_tables(&db, sealer.as_ref())));
        let (next, serial, instance_id) = match guarded {
            Ok(r) => r?,
            Err(p) => {
                return Err(StoreError::Corrupt {
                    what: format!("the tables of {}", path.display()),
                    detail: panic_text(p),
                })
            }
        };
        let store = Store {
            instance_id,
            sealer,
            committed: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            path,
            db: RwLock::new(Some(Arc::new(db))),
            retention,
            ids: Lease {
                next: AtomicU64::new(next),
                reserved: AtomicU64::new(next),
            },
            serials: Lease {
                next: AtomicU64::new(serial),
                reserved: AtomicU64::new(serial),
            },
            health: Mutex::new(StorageHealth {
                ok: true,
                since_ns: now_ns(),
                integrity,
                ..StorageHealth::default()
            }),
            reopen_wanted: AtomicBool::new(false),
            reopening: Mutex::new(()),
        };
        // The first ids are reserved before any is handed out.
        store.renew_leases(true)?;
        Ok(store)
    }

    /// The agent's instance id: 32 hex digits drawn when the database was
    /// created and kept in it, so the same across restarts and upgrades
    /// and new when the data directory is (a console keys agents by it).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Keeps `node` as the name of the node whose database this is (the
    /// daemon, at each start), so that a reader of a copy (an offline
    /// agent, a console) knows whose evidence it holds. Written only when
    /// it changed.
    pub fn set_node(&self, node: &str) -> Result<(), StoreError> {
        if self.stored_node()?.as_deref() == Some(node) {
            return Ok(());
        }
        self.write(
            || "the node name".into(),
            |db| {
                let tx = db.begin_write().map_err(db_err)?;
                tx.open_table(IDENTITY)
                    .map_err(db_err)?
                    .insert(NODE, node)
                    .map_err(db_err)?;
                tx.commit().map_err(db_err)
            },
        )
    }

    /// The node name kept by [`Store::set_node`]; `None` in a database no
    /// agent of this version started on.
    pub fn stored_node(&self) -> Result<Option<String>, StoreError> {
        self.read(|| "the node name".into(), |db| identity_value(db, NODE))
    }

    /// The database for one operation: waits for a reopen under way; an
    /// error when the last reopen failed.
    fn handle(&self) -> Result<Arc<Database>, StoreError> {
        let cur = || self.db.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(db) = cur() {
            return Ok(db);
        }
        drop(self.reopening.lock().unwrap_or_else(|p| p.into_inner()));
        cur().ok_or_else(|| StoreError::Unavailable(self.health().last_error))
    }

    /// Runs `f` on the database; a panic inside redb becomes an error
    /// naming `what`; a latched error has the committer reopen it.
    fn guarded<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.handle()?;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(&db))) {
            Ok(r) => {
                if let Err(e) = &r {
                    if latched(e) {
                        self.reopen_wanted.store(true, Relaxed);
                    }
                }
                r
            }
            // A corrupt page: the same read panics again, reopening would
            // not help; a lock poisoned by it shows as a latched error in
            // the next operation, which reopens then.
            Err(p) => {
                let what = what();
                let detail = panic_text(p);
                tracing::error!(%what, %detail, "the database panicked (corrupt file?)");
                Err(StoreError::Corrupt { what, detail })
            }
        }
    }

    /// Reads through `f` (for the other tables: models, incidents). A
    /// database a failed write left unusable is reopened (reads need no
    /// space) and the read tried once more.
    pub(crate) fn read<T>(
        &self,
        what: impl Fn() -> String,
        f: impl Fn(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let before = Arc::as_ptr(&self.handle()?) as usize;
        match self.guarded(&what, &f) {
            Err(e) if latched(&e) => {
                if let Err(err) = self.reopen_if(before) {
                    tracing::debug!(%err, "reopening for a read");
                }
                self.guarded(what, f)
            }
            r => r,
        }
    }

    /// Writes through `f` (committer thread, startup).
    pub(crate) fn write<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.guarded(what, f)
    }

    /// A new snapshot id, larger than every id handed out before, even by
    /// an agent that crashed. No I/O: it comes from the reserved lease; an
    /// error when the lease is used up because it could not be renewed.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        let mut cur = self.ids.next.load(Relaxed);
        loop {
            if cur >= self.ids.reserved.load(Relaxed) {
                return Err(StoreError::NoIdReserved(self.health().last_error));
            }
            match self
                .ids
                .next
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Ok(cur),
                Err(now) => cur = now,
            }
        }
    }

    /// Ids still reserved and not handed out.
    pub fn ids_left(&self) -> u64 {
        self.ids
            .reserved
            .load(Relaxed)
            .saturating_sub(self.ids.next.load(Relaxed))
    }

    /// The incidents' next serial, reported as serials are handed out (no
    /// I/O): the committer keeps the serial lease above it.
    pub fn note_serial(&self, next: u64) {
        self.serials.next.fetch_max(next, Relaxed);
    }

    /// The first serial this agent may hand out: above every serial a
    /// previous run reserved (call before the first [`Store::note_serial`]).
    pub fn serial_floor(&self) -> u64 {
        self.serials.next.load(Relaxed)
    }

    /// The serial lease (serials below it may have been handed out).
    pub fn serial_lease(&self) -> u64 {
        self.serials.reserved.load(Relaxed)
    }

    /// Whether a lease is at least half used.
    pub fn leases_low(&self) -> bool {
        self.ids_left() < ID_LEASE_SIZE / 2
            || self
                .serials
                .reserved
                .load(Relaxed)
                .saturating_sub(self.serials.next.load(Relaxed))
                < SERIAL_LEASE_SIZE / 2
    }

    /// Persists new leases when half used (`force`: always), then lets them
    /// be handed out. Returns whether it wrote.
    pub fn renew_leases(&self, force: bool) -> Result<bool, StoreError> {
        if !force && !self.leases_low() {
            return Ok(false);
        }
        let ids = self.ids.next.load(Relaxed) + ID_LEASE_SIZE;
        let serials = self.serials.next.load(Relaxed) + SERIAL_LEASE_SIZE;
        self.write(
            || "the id leases".into(),
            |db| {
                let tx = db.begin_write().map_err(db_err)?;
                {
                    let mut meta = tx.open_table(META).map_err(db_err)?;
                    meta.insert(ID_LEASE, ids).map_err(db_err)?;
                    meta.insert(SERIAL_LEASE, serials).map_err(db_err)?;
                }
                tx.commit().map_err(db_err)
            },
        )?;
        self.ids.reserved.fetch_max(ids, Relaxed);
        self.serials.reserved.fetch_max(serials, Relaxed);
        Ok(true)
    }

    /// Notes that snapshot `info.id` is open (committer thread): if the
    /// agent dies before committing it, the next start stores it as an
    /// empty snapshot that says so.
    pub fn mark_open(&self, info: &pb::SnapshotInfo) -> Result<(), StoreError> {
        let bytes = info.encode_to_vec();
        let id = info.id;
        self.write(
            || format!("the open mark of snapshot {id}"),
            |db| {
                let tx = db.begin_write().map_err(db_err)?;
                tx.open_table(OPEN_MARKS)
                    .map_err(db_err)?
                    .insert(id, bytes.as_slice())
                    .map_err(db_err)?;
                tx.commit().map_err(db_err)
            },
        )
    }

    /// A small write that tells whether the disk takes writes again.
    pub fn probe(&self) -> Result<(), StoreError> {
        self.write(
            || "the health probe".into(),
            |db| {
                let tx = db.begin_write().map_err(db_err)?;
                tx.open_table(META)
                    .map_err(db_err)?
                    .insert(PROBE, now_ns())
                    .map_err(db_err)?;
                tx.commit().map_err(db_err)
            },
        )
    }

    /// Stores a snapshot atomically, then applies retention: snapshots of
    /// no incident first, then incident ones, oldest first within each;
    /// never the one just stored. Returns the ids evicted.
    pub fn put(&self, snap: &pb::Snapshot) -> Result<Vec<u64>, StoreError> {
        self.put_encoded(&Encoded::from(snap))
    }

    /// [`Store::put`] of a snapshot already encoded.
    pub fn put_encoded(&self, snap: &Encoded) -> Result<Vec<u64>, StoreError> {
        let id = snap.info.id;
        let mut info = snap.info.clone();
        info.bytes = snap.bytes.len() as u64;
        info.sha256.clear();
        info.seal = None;
        let info = info.encode_to_vec();
        // The hash a reader computes: of what ExportSnapshot will send. A
        // snapshot that cannot be read back is stored unsealed (and says
        // so to every verification) rather than retried forever.
        let sha256 = match canonical_sha256(&snap.bytes) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::error!(id, %err, "the snapshot cannot be read back to be hashed: stored unsealed");
                None
            }
        };
        let evicted = self.write(
            || format!("snapshot {id}"),
            |db| self.put_tx(db, id, &snap.bytes, &info, sha256.as_deref()),
        )?;
        self.committed.fetch_add(1, Relaxed);
        self.evicted.fetch_add(evicted.len() as u64, Relaxed);
        Ok(evicted)
    }

    /// Snapshots stored and snapshots evicted by retention since the agent
    /// started.
    pub fn commit_counts(&self) -> (u64, u64) {
        (self.committed.load(Relaxed), self.evicted.load(Relaxed))
    }

    fn put_tx(
        &self,
        db: &Database,
        id: u64,
        bytes: &[u8],
        info: &[u8],
        sha256: Option<&str>,
    ) -> Result<Vec<u64>, StoreError> {
        let tx = db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let stored = meta.get(NEXT_ID).map_err(db_err)?.map_or(1, |v| v.value());
            meta.insert(NEXT_ID, stored.max(id + 1)).map_err(db_err)?;
        }
        let evicted = {
            let mut t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
            let mut index = tx.open_table(INDEX).map_err(db_err)?;
            t.insert(id, bytes).map_err(db_err)?;
            index.insert(id, info).map_err(db_err)?;
            tx.open_table(OPEN_MARKS)
                .map_err(db_err)?
                .remove(id)
                .map_err(db_err)?;
            let mut entries = Vec::new();
            for r in index.iter().map_err(db_err)? {
                let (k, v) = r.map_err(db_err)?;
                match decode_info(k.value(), v.value()) {
                    // Kept while any incident refers to it: evicted last.
                    Ok(i) => {
                        entries.push((i.incident != 0 || !i.incidents.is_empty(), i.id, i.bytes))
                    }
                    // An unreadable summary goes first.
                    Err(err) => {
                        tracing::warn!(%err, "unreadable snapshot summary");
                        entries.push((false, 0, 0));
                    }
                }
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
        if let Some(sealer) = &self.sealer {
            if let Some(sha256) = sha256 {
                seal::seal(&tx, sealer, &self.instance_id, id, sha256)?;
            }
            for &victim in &evicted {
                seal::evict(&tx, sealer, &self.instance_id, victim)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(evicted)
    }

    pub fn get(&self, id: u64) -> Result<Option<pb::Snapshot>, StoreError> {
        let bytes = self.read(
            || format!("snapshot {id}"),
            |db| {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
                let v = t.get(id).map_err(db_err)?;
                Ok(v.map(|v| v.value().to_vec()))
            },
        );
        let bytes = bytes.map_err(|e| match e {
            StoreError::Db(detail) => StoreError::Corrupt {
                what: format!("snapshot {id}"),
                detail,
            },
            e => e,
        })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        compact::decode(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Decode { id, source })
    }

    /// Summaries of every stored snapshot, oldest first (from the index:
    /// no snapshot is read).
    pub fn list(&self) -> Result<Vec<pb::SnapshotInfo>, StoreError> {
        self.read(
            || "the snapshot index".into(),
            |db| {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(INDEX).map_err(db_err)?;
                let mut out = Vec::new();
                for r in t.iter().map_err(db_err)? {
                    let (k, v) = r.map_err(db_err)?;
                    out.push(with_seal(&tx, decode_info(k.value(), v.value())?)?);
                }
                Ok(out)
            },
        )
    }

    /// Summaries of at most `limit` stored snapshots with ids above
    /// `after`, oldest first (from the index).
    pub fn list_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<pb::SnapshotInfo>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.read(
            || "the snapshot index".into(),
            |db| {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(INDEX).map_err(db_err)?;
                let mut out = Vec::new();
                for r in t.range(from..).map_err(db_err)?.take(limit) {
                    let (k, v) = r.map_err(db_err)?;
                    out.push(with_seal(&tx, decode_info(k.value(), v.value())?)?);
                }
                Ok(out)
            },
        )
    }

    /// A page of the seals after `after` (see [`seal::list`]).
    pub fn seals(&self, after: u64, limit: usize) -> Result<pb::ListSealsResponse, StoreError> {
        let mut page = self.read(
            || "the snapshot seals".into(),
            |db| seal::list(db, after, limit),
        )?;
        page.instance_id = self.instance_id.clone();
        Ok(page)
    }

    /// The summary of one stored snapshot with its seal (`None`: not
    /// stored).
    pub fn info(&self, id: u64) -> Result<Option<pb::SnapshotInfo>, StoreError> {
        self.read(
            || format!("the summary of snapshot {id}"),
            |db| {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(INDEX).map_err(db_err)?;
                let Some(v) = t.get(id).map_err(db_err)? else {
                    return Ok(None);
                };
                Ok(Some(with_seal(&tx, decode_info(id, v.value())?)?))
            },
        )
    }

    /// The agent's public signing key as a reader should know it: the key
    /// of the newest seal, or the key in use when nothing is sealed yet.
    pub fn signing_key(&self) -> Vec<u8> {
        match self.read(|| "the signing keys".into(), seal::last_key) {
            Ok(Some(k)) => k,
            Ok(None) => self
                .sealer
                .as_ref()
                .map_or_else(Vec::new, |s| s.public().to_vec()),
            Err(err) => {
                tracing::debug!(%err, "reading the signing keys");
                self.sealer
                    .as_ref()
                    .map_or_else(Vec::new, |s| s.public().to_vec())
            }
        }
    }

    /// The stored encoding of one snapshot, undecoded (`None`: not
    /// stored).
    pub fn get_raw(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(
            || format!("snapshot {id}"),
            |db| {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
                let v = t.get(id).map_err(db_err)?;
                Ok(v.map(|v| v.value().to_vec()))
            },
        )
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        self.read(
            || "the snapshot table".into(),
            |db| {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
                t.len().map_err(db_err)
            },
        )
    }

    /// Whether writes currently succeed, and the record of failures.
    pub fn health(&self) -> StorageHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a failed write; one log line when the store starts failing.
    pub fn mark_failed(&self, err: &StoreError) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.failures += 1;
        h.last_error = err.to_string();
        if h.ok {
            h.ok = false;
            h.since_ns = now_ns();
            tracing::error!(%err, "storage failing: writes are queued in memory and retried");
        } else {
            tracing::debug!(%err, "storage still failing");
        }
    }

    /// Records a successful write; one log line when the store recovers.
    pub fn mark_ok(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if !h.ok {
            let failed_s = now_ns().saturating_sub(h.since_ns) as f64 / 1e9;
            h.ok = true;
            h.since_ns = now_ns();
            tracing::warn!(
                failed_s,
                last_error = %h.last_error,
                "storage recovered: writes succeed again"
            );
        }
    }

    /// Whether a read found the database unusable (a panic, a latched I/O
    /// error) since the last reopen.
    pub fn reopen_wanted(&self) -> bool {
        self.reopen_wanted.load(Relaxed)
    }

    /// Closes the database and opens it again: after an I/O error redb
    /// refuses every operation until then. Waits (briefly) for readers
    /// still holding the old handle.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        self.reopen_locked()
    }

    /// Reopens unless someone did since `seen` (an address) was the
    /// handle.
    fn reopen_if(&self, seen: usize) -> Result<(), StoreError> {
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        let same = match &*self.db.read().unwrap_or_else(|p| p.into_inner()) {
            Some(cur) => Arc::as_ptr(cur) as usize == seen,
            None => true,
        };
        if same {
            self.reopen_locked()
        } else {
            Ok(())
        }
    }

    fn reopen_locked(&self) -> Result<(), StoreError> {
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut old) = old {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        // Dropping runs redb's shutdown, which may panic on a
                        // broken file: nothing to save then.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still) => {
                        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(still);
                        return Err(StoreError::Db(
                            "readers kept the database busy; reopening later".into(),
                        ));
                    }
                }
            }
        }
        let db = open_db(&self.path)?;
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
        self.reopen_wanted.store(false, Relaxed);
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reopens += 1;
        tracing::info!(path = %self.path.display(), "snapshot database reopened");
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether redb latched an error that only reopening clears.
fn latched(e: &StoreError) -> bool {
    match e {
        StoreError::Db(s) => {
            s.contains("Previous I/O error") || s.contains("poisoned") || s.contains("closed")
        }
        _ => false,
    }
}

/// Creates the tables, rebuilds a missing index, and reads where ids and
/// serials start: above everything stored and every lease.
fn init_tables(
    db: &Database,
    sealer: Option<&seal::Sealer>,
) -> Result<(u64, u64, String), StoreError> {
    let tx = db.begin_write().map_err(db_err)?;
    let instance_id = {
        let mut t = tx.open_table(IDENTITY).map_err(db_err)?;
        let kept = t
            .get(INSTANCE_ID)
            .map_err(db_err)?
            .map(|v| v.value().to_owned());
        match kept {
            Some(id) => id,
            None => {
                let id = new_instance_id()?;
                t.insert(INSTANCE_ID, id.as_str()).map_err(db_err)?;
                id
            }
        }
    };
    let next = {
        let snaps = tx.open_table(SNAPSHOTS).map_err(db_err)?;
        let mut index = tx.open_table(INDEX).map_err(db_err)?;
        if index.len().map_err(db_err)? != snaps.len().map_err(db_err)? {
            rebuild_index(&snaps, &mut index)?;
        }
        let meta = tx.open_table(META).map_err(db_err)?;
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(meta.get(k).map_err(db_err)?.map_or(1, |v| v.value()))
        };
        let after_last = snaps
            .last()
            .map_err(db_err)?
            .map_or(1, |(k, _)| k.value() + 1);
        let ids = get(NEXT_ID)?.max(get(ID_LEASE)?).max(after_last);
        let serials = get(SERIAL_LEASE)?;
        // Storing (and sealing) the orphans opens these tables again.
        drop(meta);
        drop(snaps);
        drop(index);
        let ids = ids.max(store_orphans(&tx, sealer, &instance_id)?);
        (ids, serials, instance_id)
    };
    tx.commit().map_err(db_err)?;
    Ok(next)
}

/// Fills `b` with random bytes from the kernel.
fn random_bytes(b: &mut [u8]) -> Result<(), StoreError> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(StoreError::Random(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// 128 random bits from the kernel, as 32 hex digits.
fn new_instance_id() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The SHA-256 (hex) of a stored snapshot's canonical encoding (see
/// `fdr_proto::integrity`): what the agent seals, what ExportSnapshot
/// sends and a console names its copy by.
pub fn canonical_sha256(stored: &[u8]) -> Result<String, compact::FormatError> {
    compact::canonical_sha256(stored)
}

/// `info` with the hash and seal its seal gives.
fn with_seal(
    tx: &redb::ReadTransaction,
    mut info: pb::SnapshotInfo,
) -> Result<pb::SnapshotInfo, StoreError> {
    if let Some(s) = seal::get(tx, info.id)? {
        info.sha256 = s.sha256.clone();
        info.seal = Some(s);
    }
    Ok(info)
}

/// The instance id kept in a database opened elsewhere (a dead node's
/// `snapshots.redb`, read by a console): `None` when it has none (written
/// by an agent older than instance ids).
pub fn stored_instance_id(db: &impl ReadableDatabase) -> Result<Option<String>, StoreError> {
    identity_value(db, INSTANCE_ID)
}

/// Gives the copy of a data directory in `dir` (not in use) a new
/// instance id and node name, so that it passes for another agent's: a
/// console keys agents by instance id, and copies of one database would
/// otherwise be one agent to it. For benchmarks that serve many copies of
/// one database (`fdr-agent --offline`); never for a live agent's own
/// directory (its console would see a new agent: and the seals, which
/// sign the instance id, no longer verify in the copy). Returns the new
/// id.
pub fn reset_identity(dir: &Path, node: &str) -> Result<String, StoreError> {
    let db = open_db(&dir.join("snapshots.redb"))?;
    let id = new_instance_id()?;
    let tx = db.begin_write().map_err(db_err)?;
    {
        let mut t = tx.open_table(IDENTITY).map_err(db_err)?;
        t.insert(INSTANCE_ID, id.as_str()).map_err(db_err)?;
        t.insert(NODE, node).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(id)
}

/// The node name kept in a database opened elsewhere (see
/// [`Store::set_node`]): `None` when it has none.
pub fn stored_node(db: &impl ReadableDatabase) -> Result<Option<String>, StoreError> {
    identity_value(db, NODE)
}

fn identity_value(db: &impl ReadableDatabase, key: &str) -> Result<Option<String>, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let t = match tx.open_table(IDENTITY) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_owned()))
}

/// Stores the snapshots a previous agent left open (it died before their
/// window closed) as empty snapshots whose gap says so, so that an
/// incident pointing at one finds its reason. Returns the id after the
/// highest.
fn store_orphans(
    tx: &redb::WriteTransaction,
    sealer: Option<&seal::Sealer>,
    instance_id: &str,
) -> Result<u64, StoreError> {
    let mut marks = tx.open_table(OPEN_MARKS).map_err(db_err)?;
    let mut orphans = Vec::new();
    for r in marks.iter().map_err(db_err)? {
        let (k, v) = r.map_err(db_err)?;
        orphans.push((k.value(), v.value().to_vec()));
    }
    let mut t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
    let mut index = tx.open_table(INDEX).map_err(db_err)?;
    let mut after = 1;
    for (id, bytes) in orphans {
        marks.remove(id).map_err(db_err)?;
        after = after.max(id + 1);
        if t.get(id).map_err(db_err)?.is_some() {
            continue;
        }
        let mut info = pb::SnapshotInfo::decode(bytes.as_slice()).unwrap_or_default();
        info.id = id;
        info.open = false;
        info.event_count = 0;
        info.completeness = 0.0;
        let snap = pb::Snapshot {
            gaps: vec![pb::Gap {
                from: info.window_start,
                to: info.window_end,
                cause: "the agent stopped (killed or crashed) while this snapshot was open: \
                        its events were never committed"
                    .into(),
                host_wide: true,
                ..Default::default()
            }],
            info: Some(info.clone()),
            ..Default::default()
        };
        let enc = Encoded::from(&snap).bytes;
        info.bytes = enc.len() as u64;
        t.insert(id, enc.as_slice()).map_err(db_err)?;
        index
            .insert(id, info.encode_to_vec().as_slice())
            .map_err(db_err)?;
        let sha = canonical_sha256(&enc).map_err(|source| StoreError::Decode { id, source })?;
        if let Some(sealer) = sealer {
            seal::seal(tx, sealer, instance_id, id, &sha)?;
        }
        tracing::warn!(
            id,
            incident = info.incident,
            "snapshot left open by a previous run stored as incomplete"
        );
    }
    Ok(after)
}

pub(crate) fn db_err<E: std::fmt::Display>(e: E) -> StoreError {
    db(e)
}

fn decode_info(id: u64, bytes: &[u8]) -> Result<pb::SnapshotInfo, StoreError> {
    pb::SnapshotInfo::decode(bytes).map_err(|source| StoreError::Decode {
        id,
        source: source.into(),
    })
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
            compact::decode(v.value()).map_err(|source| StoreError::Decode { id, source })?;
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
    use crate::event::test_support::snap;

    fn dir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fdr-store-{tag}-{}", std::process::id()))
    }

    /// What sealing adds to a commit, on a 100 000-event snapshot (a
    /// measurement of one part, not a test: `cargo test --release -p
    /// fdr-agent --lib store::tests::sealing_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn sealing_cost() {
        let d = dir("seal-cost");
        let _ = std::fs::remove_dir_all(&d);
        let store = Store::open(
            &d,
            Retention {
                max_snapshots: 1000,
                max_bytes: u64::MAX,
            },
        )
        .unwrap();
        let events: Vec<pb::Event> = (0..100_000u64)
            .map(|i| pb::Event {
                seq: i,
                time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000 + (i / 1000) as i64,
                    nanos: (i % 1000) as i32 * 1000,
                }),
                kind: pb::EventKind::Exec as i32,
                scope: "host".into(),
                process: Some(pb::Process {
                    pid: 1000 + (i % 500) as u32,
                    ppid: 1,
                    comm: format!("proc{}", i % 50),
                    exe: format!("/usr/bin/tool{}", i % 50),
                    argv: vec![format!("tool{}", i % 50), format!("--arg={i}")],
                    ..Default::default()
                }),
                detail: Some(pb::event::Detail::Exec(pb::ExecDetail {
                    filename: format!("/usr/bin/tool{}", i % 50),
                    argv: vec![format!("tool{}", i % 50), format!("--arg={i}")],
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        for round in 0..3 {
            store.renew_leases(false).unwrap();
            let id = store.next_id().unwrap();
            let mut s = snap(id, 10);
            s.events = events.clone();
            let t = Instant::now();
            let enc = Encoded::from(&s);
            let encode = t.elapsed();
            let t = Instant::now();
            let sha = canonical_sha256(&enc.bytes).unwrap();
            let hash = t.elapsed();
            let t = Instant::now();
            let dec = compact::decode(&enc.bytes).unwrap();
            let d = t.elapsed();
            let t = Instant::now();
            let canon = dec.encode_to_vec();
            let e2 = t.elapsed();
            let t = Instant::now();
            let whole = fdr_proto::integrity::sha256_hex(&canon);
            let h2 = t.elapsed();
            assert_eq!(whole, sha, "streamed = decoded then hashed");
            eprintln!(
                "  (decoding whole instead: decode {d:?}, encode {e2:?} ({} bytes), sha256 \
                 {h2:?}); the same as hashing the snapshot before storing: {}",
                canon.len(),
                fdr_proto::integrity::snapshot_sha256(&s) == sha
            );
            let t = Instant::now();
            store.put_encoded(&enc).unwrap();
            let put = t.elapsed();
            eprintln!(
                "round {round}: 100000 events, {} bytes stored: encode {:?}, seal hash {:?} \
                 (sha {}), put (hash + sign + write) {:?}",
                enc.bytes.len(),
                encode,
                hash,
                &sha[..12],
                put
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Every committed snapshot is sealed; evicted ones keep their seal,
    /// marked; the chain verifies, hashes match what export sends, and the
    /// key survives a reopen.
    #[test]
    fn committed_snapshots_form_a_verifiable_chain() {
        use fdr_proto::integrity::{self, Chain};
        let d = dir("seals");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 3,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        let key = store.signing_key();
        assert_eq!(key.len(), 32);
        let mode = std::fs::metadata(d.join(seal::KEY_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        for _ in 0..5 {
            store.renew_leases(false).unwrap();
            let id = store.next_id().unwrap();
            store.put(&snap(id, 10)).unwrap();
        }
        drop(store);
        let store = Store::open(&d, r).unwrap();
        assert_eq!(store.signing_key(), key, "the key is kept");
        let mut chain = Chain::default();
        chain.add_page(store.seals(0, 100).unwrap());
        assert_eq!(chain.seals.len(), 5);
        let stored: std::collections::BTreeSet<u64> =
            store.list().unwrap().iter().map(|i| i.id).collect();
        assert_eq!(stored.len(), 3);
        assert_eq!(chain.check(&key, &stored), vec![]);
        for info in store.list().unwrap() {
            let snap = store.get(info.id).unwrap().unwrap();
            assert_eq!(integrity::snapshot_sha256(&snap), info.sha256);
            assert_eq!(info.seal.unwrap().sha256, info.sha256);
        }
        assert!(chain.seals[&1].evicted_at.is_some());
        // Another key: every later seal is reported.
        drop(store);
        std::fs::remove_file(d.join(seal::KEY_FILE)).unwrap();
        let store = Store::open(&d, r).unwrap();
        store.renew_leases(false).unwrap();
        let id = store.next_id().unwrap();
        store.put(&snap(id, 10)).unwrap();
        let mut chain = Chain::default();
        chain.add_page(store.seals(0, 100).unwrap());
        let stored = store.list().unwrap().iter().map(|i| i.id).collect();
        let found = chain.check(&key, &stored);
        assert!(
            found.iter().any(|p| p.what.contains("signing key changed")),
            "{found:?}"
        );
        assert!(found
            .iter()
            .any(|p| p.id == id && p.what.contains("another key")));
        let _ = std::fs::remove_dir_all(&d);
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
            store.renew_leases(false).unwrap(); // the committer's job
            let id = store.next_id().unwrap();
            assert!(store.put(&snap(id, 10)).unwrap().is_empty());
        }
        let id = store.next_id().unwrap();
        assert_eq!(id, 101);
        assert_eq!(store.put(&snap(id, 10)).unwrap(), vec![1]);
        assert_eq!(store.count().unwrap(), 100);
        assert!(store.get(1).unwrap().is_none());
        assert_eq!(store.get(101).unwrap().unwrap().info.unwrap().id, 101);
        let reserved = 102 + store.ids_left();
        drop(store);
        let store = Store::open(
            &d,
            Retention {
                max_snapshots: 100,
                max_bytes: u64::MAX,
            },
        )
        .unwrap();
        assert_eq!(
            store.next_id().unwrap(),
            reserved,
            "ids survive a restart, above every id reserved"
        );
        assert_eq!(store.list().unwrap().len(), 100);
        // Pages of the index: ids above the cursor, in order.
        let ids = |after, n| -> Vec<u64> {
            store
                .list_after(after, n)
                .unwrap()
                .iter()
                .map(|i| i.id)
                .collect()
        };
        assert_eq!(ids(0, 3), [2, 3, 4]);
        assert_eq!(ids(99, 5), [100, 101]);
        assert!(ids(101, 5).is_empty());
        assert!(ids(u64::MAX, 5).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_node_name_and_instance_id_are_kept_across_opens() {
        let d = dir("node");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 10,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        assert_eq!(store.stored_node().unwrap(), None);
        store.set_node("node-a").unwrap();
        store.set_node("node-a").unwrap();
        assert_eq!(store.stored_node().unwrap().as_deref(), Some("node-a"));
        let id = store.instance_id().to_owned();
        drop(store);
        let store = Store::open(&d, r).unwrap();
        assert_eq!(store.stored_node().unwrap().as_deref(), Some("node-a"));
        assert_eq!(store.instance_id(), id);
        store.set_node("node-b").unwrap();
        drop(store);
        let db = Database::open(d.join("snapshots.redb")).unwrap();
        assert_eq!(stored_node(&db).unwrap().as_deref(), Some("node-b"));
        assert_eq!(stored_instance_id(&db).unwrap(), Some(id.clone()));
        drop(db);
        // A copy made to pass for another agent: a new id and node, the
        // snapshots kept.
        let new = reset_identity(&d, "node-c").unwrap();
        assert_ne!(new, id);
        assert_eq!(new.len(), 32);
        let store = Store::open(&d, r).unwrap();
        assert_eq!(store.instance_id(), new);
        assert_eq!(store.stored_node().unwrap().as_deref(), Some("node-c"));
        drop(store);
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
        store
            .write(
                || "test".into(),
                |db| {
                    let tx = db.begin_write().map_err(db_err)?;
                    tx.delete_table(INDEX).map_err(db_err)?;
                    tx.commit().map_err(db_err)
                },
            )
            .unwrap();
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

    #[test]
    fn ids_are_reserved_before_they_are_handed_out() {
        let d = dir("lease");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 10,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        // Handed out, never committed: the agent "crashes".
        let handed: Vec<u64> = (0..10).map(|_| store.next_id().unwrap()).collect();
        assert_eq!(handed, (1..=10).collect::<Vec<_>>());
        drop(store);
        let store = Store::open(&d, r).unwrap();
        let next = store.next_id().unwrap();
        assert!(
            next > 10,
            "an id handed out before the crash is not reused: {next}"
        );
        // Without renewal the lease runs out: an error, not a reused id.
        let mut n = 1;
        let err = loop {
            match store.next_id() {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(n, ID_LEASE_SIZE, "the whole lease, then an error");
        assert!(matches!(err, StoreError::NoIdReserved(_)), "{err}");
        assert!(store.leases_low());
        assert!(store.renew_leases(false).unwrap());
        assert_eq!(store.next_id().unwrap(), next + ID_LEASE_SIZE);
        drop(store);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_page_is_an_error_naming_the_snapshot_never_a_panic() {
        let d = dir("garbage");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 100,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        for id in 1..=40 {
            store.put(&snap(id, 20_000)).unwrap();
        }
        drop(store);
        let f = d.join("snapshots.redb");
        let mut bytes = std::fs::read(&f).unwrap();
        let len = bytes.len();
        // 4 KiB of garbage in the middle of the file, and more further on.
        for at in [len / 2, len / 3, 2 * len / 3] {
            let at = at & !4095;
            for (i, b) in bytes[at..at + 4096].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(7);
            }
        }
        std::fs::write(&f, &bytes).unwrap();
        // Opening checks integrity (and reports it); a file it cannot
        // repair may still refuse to open — an error, not a panic.
        let store = match Store::open(&d, r) {
            Ok(s) => s,
            Err(err) => {
                eprintln!("open: {err}");
                assert!(
                    err.to_string().contains("snapshots.redb")
                        || err.to_string().contains("corrupt"),
                    "{err}"
                );
                std::fs::remove_dir_all(&d).unwrap();
                return;
            }
        };
        let integrity = store.health().integrity;
        assert!(!integrity.is_empty());
        let mut errors = 0;
        for id in 1..=40 {
            match store.get(id) {
                Ok(_) => {}
                Err(err) => {
                    errors += 1;
                    assert!(err.to_string().contains(&format!("snapshot {id}")), "{err}");
                }
            }
        }
        let _ = store.list();
        assert!(
            errors > 0 || integrity != "ok",
            "the garbage went unnoticed"
        );
        eprintln!("integrity at open: {integrity}; {errors} of 40 snapshots unreadable");
        drop(store);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_snapshot_left_open_by_a_crash_is_stored_as_incomplete() {
        let d = dir("orphan");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 10,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        let id = store.next_id().unwrap();
        let info = pb::SnapshotInfo {
            id,
            incident: 7,
            open: true,
            ..Default::default()
        };
        store.mark_open(&info).unwrap();
        let done = store.next_id().unwrap();
        store
            .mark_open(&pb::SnapshotInfo {
                id: done,
                ..info.clone()
            })
            .unwrap();
        store.put(&snap(done, 10)).unwrap();
        drop(store); // killed before `id` committed
        let store = Store::open(&d, r).unwrap();
        let stub = store.get(id).unwrap().expect("stored as incomplete");
        let i = stub.info.unwrap();
        assert_eq!((i.id, i.incident, i.open, i.event_count), (id, 7, false, 0));
        assert!(
            stub.gaps[0].cause.contains("agent stopped"),
            "{:?}",
            stub.gaps
        );
        assert_eq!(
            store.get(done).unwrap().unwrap().info.unwrap().reason.len(),
            10
        );
        assert!(store.next_id().unwrap() > done);
        assert_eq!(store.list().unwrap().len(), 2);
        drop(store);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_crash_before_the_first_commit_leaves_a_store_that_opens_sealed() {
        let d = dir("orphan-first");
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 10,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        let id = store.next_id().unwrap();
        store
            .mark_open(&pb::SnapshotInfo {
                id,
                open: true,
                ..Default::default()
            })
            .unwrap();
        drop(store); // killed before any snapshot was sealed
        let store = Store::open(&d, r).unwrap();
        let info = store.info(id).unwrap().expect("stored as incomplete");
        assert_eq!(info.seal.expect("sealed").sha256, info.sha256);
        drop(store);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn garbage_anywhere_is_an_error_at_open_or_in_the_request_never_a_panic() {
        use std::os::unix::fs::FileExt;
        let r = Retention {
            max_snapshots: 100,
            max_bytes: u64::MAX,
        };
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 131 + 17) as u8).collect();
        // Which eighths of the file get 4 KiB of garbage.
        for (n, eighths) in [&[0u64][..], &[1], &[4], &[7], &[1, 2, 3, 4, 5, 6, 7]]
            .into_iter()
            .enumerate()
        {
            let d = dir(&format!("garbage-{n}"));
            let _ = std::fs::remove_dir_all(&d);
            let store = Store::open(&d, r).unwrap();
            for id in 1..=40 {
                store.put(&snap(id, 20_000)).unwrap();
            }
            drop(store);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("snapshots.redb"))
                .unwrap();
            let len = f.metadata().unwrap().len();
            for k in eighths {
                f.write_all_at(&garbage, (len * k / 8) & !4095).unwrap();
            }
            drop(f);
            let outcome = match Store::open(&d, r) {
                Err(err) => {
                    assert!(err.to_string().contains("snapshots.redb"), "{err}");
                    format!("refused at open: {err}")
                }
                Ok(store) => {
                    let mut errors = 0;
                    for id in 1..=40 {
                        if let Err(err) = store.get(id) {
                            errors += 1;
                            let text = err.to_string();
                            assert!(text.contains(&format!("snapshot {id}")), "{text}");
                        }
                    }
                    let _ = store.list();
                    format!(
                        "integrity {}; {errors} of 40 unreadable",
                        store.health().integrity
                    )
                }
            };
            eprintln!("garbage at eighths {eighths:?}: {outcome}");
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
}
