//! The console's index (redb, `index.redb` in the data directory): the
//! agents it knows, every incident it ingested under its fleet serial,
//! every snapshot it holds (and which object holds it), and how far each
//! agent is copied. What the evidence store holds is named here; the
//! objects themselves are in [`crate::evidence`].
//!
//! Crash order: a snapshot's object is written before the index names it
//! (an object no entry names is an orphan, removed at start by
//! [`Index::orphans`]); an evicted snapshot leaves the index before its
//! object is deleted. An incident, its fleet serial and the agent's new
//! position are written in one transaction: after a crash the console
//! resumes from a position that matches what it holds, so an incident is
//! ingested exactly once.

use std::{path::Path, sync::Arc};

use fdr_proto::v1 as pb;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::config::RetentionConfig;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// instance id → encoded `fdr.v1.Agent` (what is kept of it).
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// fleet serial → encoded `fdr.v1.Incident` (console fields set).
const INCIDENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("incidents");
/// (instance id, agent serial) → fleet serial.
const INCIDENT_KEYS: TableDefinition<(&str, u64), u64> = TableDefinition::new("incident_keys");
/// fleet serial → the agent's id of the snapshot not copied yet.
const PENDING: TableDefinition<u64, u64> = TableDefinition::new("pending_snapshots");
/// console snapshot id → encoded `fdr.v1.SnapshotInfo` (console fields set).
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// (instance id, agent snapshot id) → console snapshot id (kept after the
/// snapshot is evicted: it is not copied again).
const SNAPSHOT_KEYS: TableDefinition<(&str, u64), u64> = TableDefinition::new("snapshot_keys");
/// object hash → snapshots referring to it.
const OBJECTS: TableDefinition<&str, u64> = TableDefinition::new("objects");

const NEXT_SERIAL: &str = "next_fleet_serial";
const NEXT_SNAPSHOT: &str = "next_snapshot_id";
const SNAPSHOT_BYTES: &str = "snapshot_bytes";
const INSTANCE: &str = "console_instance";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("console index {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("console index: {0}")]
    Db(String),
    #[error("console index holds a record that does not decode ({what}): {detail}")]
    Decode { what: String, detail: String },
}

fn db<E: std::fmt::Display>(e: E) -> IndexError {
    IndexError::Db(e.to_string())
}

/// Where an incident's snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotRef {
    /// Held by the console under this id.
    Held(u64),
    /// Not copied yet: the agent's id.
    Pending(u64),
    /// The incident has none.
    None,
}

/// What a snapshot ingest changed.
#[derive(Debug, Default)]
pub struct Stored {
    pub id: u64,
    /// Stored now (false: it was held already).
    pub new: bool,
    /// Objects no snapshot refers to any more: delete them now (after the
    /// commit).
    pub unreferenced: Vec<String>,
    pub evicted: Vec<u64>,
}

pub struct Index {
    db: Arc<Database>,
    retention: RetentionConfig,
    instance: String,
    /// The OTLP export's outbox (`[export.otlp]` enabled): incident writes
    /// queue their records in the same transaction.
    outbox: Option<Arc<fdr_export::Outbox>>,
}

impl Index {
    /// Runs `f` on the index off the async threads (redb blocks).
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let index = self.clone();
        tokio::task::spawn_blocking(move || f(&index))
            .await
            .map_err(|e| IndexError::Db(format!("index task: {e}")))?
    }

    pub fn open(dir: &Path, retention: RetentionConfig) -> Result<Index, IndexError> {
        let path = dir.join("index.redb");
        let open_err = |detail: String| IndexError::Open {
            path: path.display().to_string(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let database = Database::builder()
            .set_cache_size(64 << 20)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    open_err("in use by another process (another fdr-console?)".into())
                }
                e => open_err(e.to_string()),
            })?;
        let tx = database.begin_write().map_err(db)?;
        let instance;
        {
            let mut meta = tx.open_table(META).map_err(db)?;
            for t in [NEXT_SERIAL, NEXT_SNAPSHOT] {
                if meta.get(t).map_err(db)?.is_none() {
                    meta.insert(t, 1).map_err(db)?;
                }
            }
            // The console's own instance id: two u64 halves.
            let hi = meta.get(INSTANCE).map_err(db)?.map(|v| v.value());
            let id = match hi {
                Some(v) => v,
                None => {
                    let v = random_u64();
                    meta.insert(INSTANCE, v).map_err(db)?;
                    v
                }
            };
            instance = format!("{id:016x}");
            tx.open_table(AGENTS).map_err(db)?;
            tx.open_table(INCIDENTS).map_err(db)?;
            tx.open_table(INCIDENT_KEYS).map_err(db)?;
            tx.open_table(PENDING).map_err(db)?;
            tx.open_table(SNAPSHOTS).map_err(db)?;
            tx.open_table(SNAPSHOT_KEYS).map_err(db)?;
            tx.open_table(OBJECTS).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(Index {
            db: Arc::new(database),
            retention,
            instance,
            outbox: None,
        })
    }

    /// Queues OTLP export records for every incident ingested or updated
    /// from now on, in the outbox bounded by `max_bytes`; returns the
    /// outbox and the database, for the sender.
    pub fn enable_export(&mut self, max_bytes: u64) -> (Arc<fdr_export::Outbox>, Arc<Database>) {
        let o = Arc::new(fdr_export::Outbox::new(self.instance.clone(), max_bytes));
        self.outbox = Some(o.clone());
        (o, self.db.clone())
    }

    /// The database (the export sender reads and acknowledges its outbox
    /// there).
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// The export's outbox, when enabled.
    pub fn outbox(&self) -> Option<&Arc<fdr_export::Outbox>> {
        self.outbox.as_ref()
    }

    /// Queues the export records of `new` (over `prev`) in `tx`.
    fn export(
        &self,
        tx: &redb::WriteTransaction,
        prev: Option<&pb::Incident>,
        new: &pb::Incident,
    ) -> Result<(), IndexError> {
        if let Some(o) = &self.outbox {
            // The hash of the copy held (its canonical encoding's, as
            // sealed), when held.
            let sha = match new.snapshot_id {
                0 => String::new(),
                id => {
                    let snaps = tx.open_table(SNAPSHOTS).map_err(db)?;
                    let v = snaps.get(id).map_err(db)?.map(|v| v.value().to_vec());
                    v.and_then(|v| pb::SnapshotInfo::decode(v.as_slice()).ok())
                        .map(|i| i.sha256)
                        .unwrap_or_default()
                }
            };
            o.enqueue(tx, fdr_export::incident_records(prev, new, &sha))
                .map_err(db)?;
        }
        Ok(())
    }

    fn exported(&self) {
        if let Some(o) = &self.outbox {
            o.wake();
        }
    }

    /// The console's own id (its `GetIdentity`).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    // ---- agents ----

    pub fn agents(&self) -> Result<Vec<pb::Agent>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(AGENTS).map_err(db)?;
        let mut out = Vec::new();
        for r in t.iter().map_err(db)? {
            let (k, v) = r.map_err(db)?;
            out.push(decode::<pb::Agent>(v.value(), || {
                format!("agent {}", k.value())
            })?);
        }
        Ok(out)
    }

    pub fn agent(&self, instance: &str) -> Result<Option<pb::Agent>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(AGENTS).map_err(db)?;
        let v = t.get(instance).map_err(db)?;
        v.map(|v| decode::<pb::Agent>(v.value(), || format!("agent {instance}")))
            .transpose()
    }

    /// Creates or changes the agent's record.
    pub fn update_agent(
        &self,
        instance: &str,
        f: impl FnOnce(&mut pb::Agent),
    ) -> Result<pb::Agent, IndexError> {
        let tx = self.db.begin_write().map_err(db)?;
        let a = {
            let mut t = tx.open_table(AGENTS).map_err(db)?;
            let mut a = match t.get(instance).map_err(db)? {
                Some(v) => decode::<pb::Agent>(v.value(), || format!("agent {instance}"))?,
                None => pb::Agent {
                    instance_id: instance.to_owned(),
                    ..Default::default()
                },
            };
            f(&mut a);
            t.insert(instance, a.encode_to_vec().as_slice())
                .map_err(db)?;
            a
        };
        tx.commit().map_err(db)?;
        Ok(a)
    }

    // ---- snapshots ----

    /// The console's id of the agent's snapshot, if it was copied (even
    /// when retention evicted it since).
    pub fn snapshot_key(&self, instance: &str, agent_id: u64) -> Result<Option<u64>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(SNAPSHOT_KEYS).map_err(db)?;
        Ok(t.get((instance, agent_id)).map_err(db)?.map(|v| v.value()))
    }

    /// The seals of the agent's snapshots the console holds a copy of
    /// (retention not evicted here), by the agent's id.
    pub fn held_seals(&self, instance: &str) -> Result<Vec<(u64, pb::SnapshotSeal)>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let keys = tx.open_table(SNAPSHOT_KEYS).map_err(db)?;
        let snaps = tx.open_table(SNAPSHOTS).map_err(db)?;
        let mut out = Vec::new();
        for r in keys
            .range((instance, 0u64)..=(instance, u64::MAX))
            .map_err(db)?
        {
            let (k, v) = r.map_err(db)?;
            let agent_id = k.value().1;
            let Some(info) = snaps.get(v.value()).map_err(db)? else {
                continue;
            };
            let info: pb::SnapshotInfo =
                decode(info.value(), || format!("snapshot {}", v.value()))?;
            if let Some(seal) = info.seal {
                out.push((agent_id, seal));
            }
        }
        Ok(out)
    }

    /// Records a snapshot whose object is stored (`info.sha256`, `bytes`),
    /// then applies retention. `info` comes with the agent's id; the
    /// console's is assigned here.
    pub fn add_snapshot(&self, mut info: pb::SnapshotInfo) -> Result<Stored, IndexError> {
        let tx = self.db.begin_write().map_err(db)?;
        let mut stored = Stored::default();
        {
            let mut keys = tx.open_table(SNAPSHOT_KEYS).map_err(db)?;
            let key = (info.agent_instance.as_str(), info.agent_snapshot_id);
            let existing = keys.get(key).map_err(db)?.map(|v| v.value());
            if let Some(id) = existing {
                stored.id = id;
                drop(keys);
                tx.abort().map_err(db)?;
                return Ok(stored);
            }
            let mut meta = tx.open_table(META).map_err(db)?;
            let id = meta
                .get(NEXT_SNAPSHOT)
                .map_err(db)?
                .map_or(1, |v| v.value());
            meta.insert(NEXT_SNAPSHOT, id + 1).map_err(db)?;
            let total = meta
                .get(SNAPSHOT_BYTES)
                .map_err(db)?
                .map_or(0, |v| v.value());
            meta.insert(SNAPSHOT_BYTES, total + info.bytes)
                .map_err(db)?;
            info.id = id;
            stored.new = true;
            keys.insert(key, id).map_err(db)?;
            let mut snaps = tx.open_table(SNAPSHOTS).map_err(db)?;
            snaps
                .insert(id, info.encode_to_vec().as_slice())
                .map_err(db)?;
            let mut objects = tx.open_table(OBJECTS).map_err(db)?;
            let refs = objects
                .get(info.sha256.as_str())
                .map_err(db)?
                .map_or(0, |v| v.value());
            objects.insert(info.sha256.as_str(), refs + 1).map_err(db)?;
            stored.id = id;
            // Retention: oldest first beyond either cap (never the one
            // just stored).
            loop {
                let count = snaps.len().map_err(db)?;
                let bytes = meta
                    .get(SNAPSHOT_BYTES)
                    .map_err(db)?
                    .map_or(0, |v| v.value());
                if count <= 1
                    || (count <= self.retention.max_snapshots
                        && bytes <= self.retention.max_snapshot_bytes)
                {
                    break;
                }
                let Some((k, v)) = snaps.pop_first().map_err(db)? else {
                    break;
                };
                let (old_id, old) = (
                    k.value(),
                    decode::<pb::SnapshotInfo>(v.value(), || format!("snapshot {}", k.value()))?,
                );
                drop((k, v));
                meta.insert(SNAPSHOT_BYTES, bytes.saturating_sub(old.bytes))
                    .map_err(db)?;
                let refs = objects
                    .get(old.sha256.as_str())
                    .map_err(db)?
                    .map_or(0, |v| v.value());
                if refs <= 1 {
                    objects.remove(old.sha256.as_str()).map_err(db)?;
                    stored.unreferenced.push(old.sha256.clone());
                } else {
                    objects.insert(old.sha256.as_str(), refs - 1).map_err(db)?;
                }
                stored.evicted.push(old_id);
            }
        }
        tx.commit().map_err(db)?;
        Ok(stored)
    }

    pub fn snapshot(&self, id: u64) -> Result<Option<pb::SnapshotInfo>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(SNAPSHOTS).map_err(db)?;
        let v = t.get(id).map_err(db)?;
        v.map(|v| decode(v.value(), || format!("snapshot {id}")))
            .transpose()
    }

    /// Snapshots with an id above `after`, at most `limit`.
    pub fn snapshots_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<pb::SnapshotInfo>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(SNAPSHOTS).map_err(db)?;
        let mut out = Vec::new();
        for r in t.range(after.saturating_add(1)..).map_err(db)? {
            let (k, v) = r.map_err(db)?;
            out.push(decode(v.value(), || format!("snapshot {}", k.value()))?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Snapshots held, and their bytes.
    pub fn snapshot_totals(&self) -> Result<(u64, u64), IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(SNAPSHOTS).map_err(db)?;
        let meta = tx.open_table(META).map_err(db)?;
        let bytes = meta
            .get(SNAPSHOT_BYTES)
            .map_err(db)?
            .map_or(0, |v| v.value());
        Ok((t.len().map_err(db)?, bytes))
    }

    /// Whether a snapshot names the object (checked again before an
    /// evicted object is deleted).
    pub fn object_referenced(&self, sha: &str) -> Result<bool, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(OBJECTS).map_err(db)?;
        Ok(t.get(sha).map_err(db)?.is_some())
    }

    /// Every object hash the index refers to.
    pub fn objects(&self) -> Result<Vec<String>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(OBJECTS).map_err(db)?;
        let mut out = Vec::new();
        for r in t.iter().map_err(db)? {
            out.push(r.map_err(db)?.0.value().to_owned());
        }
        Ok(out)
    }

    /// Of `listed` (what the object store holds), the objects the index
    /// does not name: left by a crash between a write and its index entry.
    pub fn orphans(&self, listed: &[String]) -> Result<Vec<String>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(OBJECTS).map_err(db)?;
        let mut out = Vec::new();
        for sha in listed {
            if t.get(sha.as_str()).map_err(db)?.is_none() {
                out.push(sha.clone());
            }
        }
        Ok(out)
    }

    // ---- incidents ----

    pub fn fleet_serial(
        &self,
        instance: &str,
        agent_serial: u64,
    ) -> Result<Option<u64>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(INCIDENT_KEYS).map_err(db)?;
        Ok(t.get((instance, agent_serial))
            .map_err(db)?
            .map(|v| v.value()))
    }

    /// Ingests an incident of `agent` (its record has `agent_instance`
    /// and `node` set; `serial` is the agent's): numbers it with the next
    /// fleet serial, records where its snapshot is, and moves the agent's
    /// position to its serial, in one transaction. An incident already
    /// ingested is left as it is: its fleet serial is returned.
    pub fn ingest_incident(
        &self,
        mut inc: pb::Incident,
        snap: SnapshotRef,
    ) -> Result<(u64, bool), IndexError> {
        let instance = inc.agent_instance.clone();
        let agent_serial = inc.serial;
        let tx = self.db.begin_write().map_err(db)?;
        let result;
        {
            let mut keys = tx.open_table(INCIDENT_KEYS).map_err(db)?;
            let existing = keys
                .get((instance.as_str(), agent_serial))
                .map_err(db)?
                .map(|v| v.value());
            if let Some(f) = existing {
                result = (f, false);
            } else {
                let mut meta = tx.open_table(META).map_err(db)?;
                let fleet = meta.get(NEXT_SERIAL).map_err(db)?.map_or(1, |v| v.value());
                meta.insert(NEXT_SERIAL, fleet + 1).map_err(db)?;
                keys.insert((instance.as_str(), agent_serial), fleet)
                    .map_err(db)?;
                inc.agent_serial = agent_serial;
                inc.serial = fleet;
                inc.update = false;
                match snap {
                    SnapshotRef::Held(id) => {
                        inc.snapshot_id = id;
                        link_snapshot(&tx, id, fleet)?;
                    }
                    SnapshotRef::Pending(agent_id) => {
                        inc.snapshot_id = 0;
                        tx.open_table(PENDING)
                            .map_err(db)?
                            .insert(fleet, agent_id)
                            .map_err(db)?;
                    }
                    SnapshotRef::None => inc.snapshot_id = 0,
                }
                self.export(&tx, None, &inc)?;
                let mut t = tx.open_table(INCIDENTS).map_err(db)?;
                t.insert(fleet, inc.encode_to_vec().as_slice())
                    .map_err(db)?;
                // Incident records beyond their cap: oldest first.
                while t.len().map_err(db)? > self.retention.max_incidents {
                    let Some((k, v)) = t.pop_first().map_err(db)? else {
                        break;
                    };
                    // Its key stays: an incident aged out here is never
                    // ingested again (a refresh reads it as held).
                    let old_serial = k.value();
                    drop((k, v));
                    tx.open_table(PENDING)
                        .map_err(db)?
                        .remove(old_serial)
                        .map_err(db)?;
                }
                result = (fleet, true);
            }
            let mut agents = tx.open_table(AGENTS).map_err(db)?;
            let mut a = match agents.get(instance.as_str()).map_err(db)? {
                Some(v) => decode::<pb::Agent>(v.value(), || format!("agent {instance}"))?,
                None => pb::Agent {
                    instance_id: instance.clone(),
                    ..Default::default()
                },
            };
            if agent_serial > a.synced_serial {
                a.synced_serial = agent_serial;
            }
            if result.1 {
                a.incidents += 1;
            }
            agents
                .insert(instance.as_str(), a.encode_to_vec().as_slice())
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        if result.1 {
            self.exported();
        }
        Ok(result)
    }

    /// Changes a stored incident (an update from its agent, its snapshot
    /// copied); returns the new record. `None` when it is not held.
    pub fn update_incident(
        &self,
        fleet: u64,
        f: impl FnOnce(&mut pb::Incident),
    ) -> Result<Option<pb::Incident>, IndexError> {
        let tx = self.db.begin_write().map_err(db)?;
        let out = {
            let mut t = tx.open_table(INCIDENTS).map_err(db)?;
            let cur = t.get(fleet).map_err(db)?.map(|v| v.value().to_vec());
            match cur {
                None => None,
                Some(v) => {
                    let mut inc: pb::Incident = decode(&v, || format!("incident {fleet}"))?;
                    let prev = self.outbox.is_some().then(|| inc.clone());
                    f(&mut inc);
                    inc.serial = fleet;
                    t.insert(fleet, inc.encode_to_vec().as_slice())
                        .map_err(db)?;
                    if prev.as_ref() != Some(&inc) {
                        self.export(&tx, prev.as_ref(), &inc)?;
                    }
                    Some(inc)
                }
            }
        };
        tx.commit().map_err(db)?;
        if out.is_some() {
            self.exported();
        }
        Ok(out)
    }

    /// Marks the incident's snapshot as pending (the agent's id), or
    /// held (the console's id; the pending mark goes).
    pub fn set_incident_snapshot(
        &self,
        fleet: u64,
        snap: SnapshotRef,
    ) -> Result<Option<pb::Incident>, IndexError> {
        let tx = self.db.begin_write().map_err(db)?;
        let out = {
            let mut pending = tx.open_table(PENDING).map_err(db)?;
            let mut t = tx.open_table(INCIDENTS).map_err(db)?;
            let cur = t.get(fleet).map_err(db)?.map(|v| v.value().to_vec());
            match cur {
                None => {
                    pending.remove(fleet).map_err(db)?;
                    None
                }
                Some(v) => {
                    let mut inc: pb::Incident = decode(&v, || format!("incident {fleet}"))?;
                    let before = inc.snapshot_id;
                    let prev = self.outbox.is_some().then(|| inc.clone());
                    match snap {
                        SnapshotRef::Held(id) => {
                            inc.snapshot_id = id;
                            pending.remove(fleet).map_err(db)?;
                            link_snapshot(&tx, id, fleet)?;
                        }
                        SnapshotRef::Pending(agent_id) => {
                            inc.snapshot_id = 0;
                            pending.insert(fleet, agent_id).map_err(db)?;
                        }
                        SnapshotRef::None => {
                            pending.remove(fleet).map_err(db)?;
                        }
                    }
                    t.insert(fleet, inc.encode_to_vec().as_slice())
                        .map_err(db)?;
                    // Its evidence is held now: the SIEM learns its id.
                    if inc.snapshot_id != before && inc.snapshot_id != 0 {
                        self.export(&tx, prev.as_ref(), &inc)?;
                    }
                    Some(inc)
                }
            }
        };
        tx.commit().map_err(db)?;
        self.exported();
        Ok(out)
    }

    /// The incidents of `instance` whose snapshot is not copied yet:
    /// (fleet serial, agent serial, the agent's snapshot id).
    pub fn pending(&self, instance: &str) -> Result<Vec<(u64, u64, u64)>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let p = tx.open_table(PENDING).map_err(db)?;
        let t = tx.open_table(INCIDENTS).map_err(db)?;
        let mut out = Vec::new();
        for r in p.iter().map_err(db)? {
            let (k, v) = r.map_err(db)?;
            let fleet = k.value();
            if let Some(iv) = t.get(fleet).map_err(db)? {
                let inc: pb::Incident = decode(iv.value(), || format!("incident {fleet}"))?;
                if inc.agent_instance == instance {
                    out.push((fleet, inc.agent_serial, v.value()));
                }
            }
        }
        Ok(out)
    }

    /// Pending snapshots per agent instance.
    pub fn pending_count(&self, instance: &str) -> Result<u64, IndexError> {
        Ok(self.pending(instance)?.len() as u64)
    }

    pub fn incident(&self, fleet: u64) -> Result<Option<pb::Incident>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(INCIDENTS).map_err(db)?;
        let v = t.get(fleet).map_err(db)?;
        v.map(|v| decode(v.value(), || format!("incident {fleet}")))
            .transpose()
    }

    /// Incidents with a fleet serial above `after`, oldest first, while
    /// `more` says so (given each record's encoded length).
    pub fn incidents_after(
        &self,
        after: u64,
        mut more: impl FnMut(usize) -> bool,
    ) -> Result<Vec<pb::Incident>, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(INCIDENTS).map_err(db)?;
        let mut out = Vec::new();
        for r in t.range(after.saturating_add(1)..).map_err(db)? {
            let (k, v) = r.map_err(db)?;
            if !more(v.value().len()) {
                break;
            }
            out.push(decode(v.value(), || format!("incident {}", k.value()))?);
        }
        Ok(out)
    }

    /// Incidents below fleet serial `before` (0: from the newest), newest
    /// first: those `keep` takes, until `want` are kept or `scan` were
    /// looked at. Also gives the last serial looked at (where to go on).
    pub fn incidents_newest_first(
        &self,
        before: u64,
        want: usize,
        scan: usize,
        mut keep: impl FnMut(&pb::Incident) -> bool,
    ) -> Result<(Vec<pb::Incident>, Option<u64>), IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(INCIDENTS).map_err(db)?;
        let end = if before == 0 { u64::MAX } else { before };
        let mut out = Vec::new();
        let mut last = None;
        for (n, r) in t.range(..end).map_err(db)?.rev().enumerate() {
            if out.len() >= want || n >= scan {
                return Ok((out, last));
            }
            let (k, v) = r.map_err(db)?;
            let inc: pb::Incident = decode(v.value(), || format!("incident {}", k.value()))?;
            last = Some(k.value());
            if keep(&inc) {
                out.push(inc);
            }
        }
        Ok((out, None))
    }

    /// The highest fleet serial handed out (0: none).
    pub fn last_serial(&self) -> Result<u64, IndexError> {
        let tx = self.db.begin_read().map_err(db)?;
        let meta = tx.open_table(META).map_err(db)?;
        Ok(meta
            .get(NEXT_SERIAL)
            .map_err(db)?
            .map_or(1, |v| v.value())
            .saturating_sub(1))
    }
}

/// Names incident `fleet` in snapshot `id`'s record (the first one it
/// names is its `incident`).
fn link_snapshot(tx: &redb::WriteTransaction, id: u64, fleet: u64) -> Result<(), IndexError> {
    let mut snaps = tx.open_table(SNAPSHOTS).map_err(db)?;
    let cur = snaps.get(id).map_err(db)?.map(|v| v.value().to_vec());
    let Some(cur) = cur else {
        return Ok(());
    };
    let mut info: pb::SnapshotInfo = decode(&cur, || format!("snapshot {id}"))?;
    if !info.incidents.contains(&fleet) {
        info.incidents.push(fleet);
        info.incident = info.incidents.first().copied().unwrap_or(0);
        snaps
            .insert(id, info.encode_to_vec().as_slice())
            .map_err(db)?;
    }
    Ok(())
}

fn decode<M: Message + Default>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<M, IndexError> {
    M::decode(bytes).map_err(|e| IndexError::Decode {
        what: what(),
        detail: e.to_string(),
    })
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // The kernel's randomness; the time as a fallback (an id, not a key).
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(instance: &str, agent_id: u64, sha: &str, bytes: u64) -> pb::SnapshotInfo {
        pb::SnapshotInfo {
            agent_instance: instance.into(),
            agent_snapshot_id: agent_id,
            sha256: sha.into(),
            bytes,
            ..Default::default()
        }
    }

    #[test]
    fn retention_evicts_the_oldest_and_frees_unreferenced_objects() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(
            dir.path(),
            RetentionConfig {
                max_snapshots: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let mut freed = Vec::new();
        for i in 1..=4 {
            let s = idx
                .add_snapshot(info("a", i, &format!("sha{i}"), 10))
                .unwrap();
            assert_eq!(s.id, i);
            freed.extend(s.unreferenced);
        }
        assert_eq!(freed, ["sha1"]);
        assert_eq!(idx.snapshot_totals().unwrap(), (3, 30));
        assert!(idx.snapshot(1).unwrap().is_none());
        assert_eq!(idx.objects().unwrap().len(), 3);
        // Copied once: the same agent snapshot again is the same id, even
        // evicted.
        assert_eq!(idx.add_snapshot(info("a", 1, "sha1", 10)).unwrap().id, 1);
        assert_eq!(idx.snapshot_totals().unwrap(), (3, 30));
    }

    #[test]
    fn incidents_get_gapless_fleet_serials_once() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), RetentionConfig::default()).unwrap();
        let inc = |inst: &str, s: u64| pb::Incident {
            serial: s,
            agent_instance: inst.into(),
            node: "n".into(),
            ..Default::default()
        };
        assert_eq!(
            idx.ingest_incident(inc("a", 5), SnapshotRef::None).unwrap(),
            (1, true)
        );
        assert_eq!(
            idx.ingest_incident(inc("b", 5), SnapshotRef::Pending(9))
                .unwrap(),
            (2, true)
        );
        assert_eq!(
            idx.ingest_incident(inc("a", 5), SnapshotRef::None).unwrap(),
            (1, false)
        );
        assert_eq!(
            idx.ingest_incident(inc("a", 6), SnapshotRef::Held(3))
                .unwrap(),
            (3, true)
        );
        let all = idx.incidents_after(0, |_| true).unwrap();
        let serials: Vec<_> = all.iter().map(|i| (i.serial, i.agent_serial)).collect();
        assert_eq!(serials, [(1, 5), (2, 5), (3, 6)]);
        assert_eq!(idx.pending("b").unwrap(), [(2, 5, 9)]);
        idx.set_incident_snapshot(2, SnapshotRef::Held(4)).unwrap();
        assert!(idx.pending("b").unwrap().is_empty());
        assert_eq!(idx.incident(2).unwrap().unwrap().snapshot_id, 4);
        assert_eq!(idx.agent("a").unwrap().unwrap().synced_serial, 6);
        drop(idx);
        let idx = Index::open(dir.path(), RetentionConfig::default()).unwrap();
        assert_eq!(idx.last_serial().unwrap(), 3);
    }

    #[test]
    fn ingests_and_updates_queue_export_records_with_fleet_serials() {
        use pb::outbox_record::Kind;
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(dir.path(), RetentionConfig::default()).unwrap();
        let (outbox, db) = idx.enable_export(1 << 20);
        let inc = pb::Incident {
            serial: 7,
            agent_instance: "agent-1".into(),
            node: "n".into(),
            audit_count: 1,
            audits: vec![pb::Audit {
                event_seq: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (fleet, _) = idx
            .ingest_incident(inc.clone(), SnapshotRef::Pending(3))
            .unwrap();
        // Ingested again: nothing new.
        idx.ingest_incident(inc, SnapshotRef::Pending(3)).unwrap();
        idx.update_incident(fleet, |i| {
            i.audit_count = 2;
            i.audits.push(pb::Audit {
                event_seq: 2,
                ..Default::default()
            });
        })
        .unwrap();
        idx.set_incident_snapshot(fleet, SnapshotRef::Held(5))
            .unwrap();
        let got = outbox.peek(&db, 100, u64::MAX).unwrap();
        let recs: Vec<&pb::OutboxRecord> = got
            .items
            .iter()
            .map(|q| q.record.as_ref().unwrap())
            .collect();
        let kinds: Vec<Kind> = recs.iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds,
            [
                Kind::IncidentOpened,
                Kind::Audit,
                Kind::IncidentUpdated,
                Kind::Audit,
                Kind::IncidentUpdated,
            ]
        );
        for r in &recs {
            let i = r.incident.as_ref().unwrap();
            assert_eq!(i.serial, fleet, "the fleet serial");
            assert_eq!(i.agent_serial, 7);
            assert_eq!(i.agent_instance, "agent-1");
        }
        assert_eq!(recs[4].incident.as_ref().unwrap().snapshot_id, 5);
        assert_eq!(outbox.instance_id(), idx.instance_id());
    }
}
