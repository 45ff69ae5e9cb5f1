//! The snapshots' seals: the agent's Ed25519 key (created with its
//! database, kept in `signing.key` beside it, mode 0600), and a signed
//! hash chain over the snapshots in the order they were committed (see
//! `fdr_proto::integrity` for what is signed and how it is checked).
//!
//! Each commit seals its snapshot in the same transaction that stores it:
//! the canonical encoding's SHA-256, signed together with the previous
//! seal's. Retention keeps the seal of a snapshot it evicts and marks it
//! evicted (signed too), so that an eviction is told from a deletion; the
//! seals of evicted snapshots are pruned from the chain's start beyond
//! [`MAX_SEALS`], and the new start is signed. Every key that has sealed is
//! kept in order: a key file replaced or lost shows as a change of key.

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use ed25519_dalek::{
    pkcs8::{DecodePrivateKey, EncodePrivateKey},
    Signer, SigningKey,
};
use fdr_proto::{integrity, v1 as pb};
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{db_err, StoreError};

/// id → encoded `fdr.v1.SnapshotSeal`.
pub(super) const SEALS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot_seals");
/// "head" → the last seal (id, sha256, chain_index); "floor" → the
/// chain's signed start (id, chain_index, signature, key); "keys" → the
/// keys that sealed; "pruned_at" → the chain index of the last pruning.
const CHAIN: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot_chain");
const HEAD: &str = "head";
const FLOOR: &str = "floor";
const KEYS: &str = "keys";
const PRUNED_AT: &str = "pruned_at";

/// Seals kept, at most (about 250 bytes each); beyond it, the oldest
/// seals of evicted snapshots are pruned (those of stored snapshots are
/// kept whatever their age), [`PRUNE_EVERY`] commits at a time.
pub const MAX_SEALS: u64 = 50_000;
/// Pruning reads every seal: it runs at most once per this many commits.
const PRUNE_EVERY: u64 = 1_000;

/// The file beside the database.
pub const KEY_FILE: &str = "signing.key";

/// The agent's signing key.
pub struct Sealer {
    key: SigningKey,
    public: Vec<u8>,
    path: PathBuf,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("public", &integrity::key_name(&self.public))
            .field("path", &self.path)
            .finish()
    }
}

fn key_err(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Key {
        path: path.display().to_string(),
        detail: what.to_string(),
    }
}

impl Sealer {
    /// Loads `dir/signing.key`, or creates it (0600, written whole before
    /// it is used). A file that is not a key is moved aside and a new key
    /// made: the recorder keeps recording, and the change of key shows in
    /// every verification.
    pub fn load_or_create(dir: &Path) -> Result<Sealer, StoreError> {
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(pem) => match SigningKey::from_pkcs8_pem(&pem) {
                Ok(key) => {
                    if let Ok(meta) = std::fs::metadata(&path) {
                        if meta.permissions().mode() & 0o077 != 0 {
                            tracing::warn!(path = %path.display(), "the signing key file is readable by others: making it 0600");
                            let _ = std::fs::set_permissions(
                                &path,
                                std::fs::Permissions::from_mode(0o600),
                            );
                        }
                    }
                    return Ok(Self::with(key, path));
                }
                Err(err) => {
                    let aside = dir.join(format!("{KEY_FILE}.unreadable-{}", super::now_ns()));
                    tracing::error!(path = %path.display(), %err, aside = %aside.display(),
                        "the signing key file is not a key: moved aside, a new key is made (verification will show the change of key)");
                    if let Err(e) = std::fs::rename(&path, &aside) {
                        tracing::error!(path = %path.display(), err = %e, "moving the unreadable key file aside failed");
                    }
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Unreadable (permissions, I/O): left as it is; this run seals
            // with a key of its own, which verification shows.
            Err(e) => {
                let mut seed = [0u8; 32];
                super::random_bytes(&mut seed)?;
                let key = SigningKey::from_bytes(&seed);
                tracing::error!(path = %path.display(), err = %e, key = %integrity::hex(key.verifying_key().as_bytes()),
                    "the signing key file cannot be read: this run's key is kept in memory only");
                return Ok(Self::with(key, path));
            }
        }
        let mut seed = [0u8; 32];
        super::random_bytes(&mut seed)?;
        let key = SigningKey::from_bytes(&seed);
        let pem = key
            .to_pkcs8_pem(Default::default())
            .map_err(|e| key_err(&path, e))?;
        let tmp = dir.join(format!("{KEY_FILE}.new"));
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(pem.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        match write() {
            Ok(()) => {
                tracing::info!(path = %path.display(), key = %integrity::hex(key.verifying_key().as_bytes()), "signing key created")
            }
            // A full or failing disk never stops the recorder: the key
            // seals this run's snapshots (the seals carry it; the next
            // start makes another, which verification shows as a change).
            Err(err) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::error!(path = %path.display(), %err, key = %integrity::hex(key.verifying_key().as_bytes()),
                    "the signing key could not be written: this run's key is kept in memory only")
            }
        }
        Ok(Self::with(key, path))
    }

    fn with(key: SigningKey, path: PathBuf) -> Sealer {
        let public = key.verifying_key().to_bytes().to_vec();
        Sealer { key, public, path }
    }

    /// The public key (32 bytes).
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, text: &[u8]) -> Vec<u8> {
        self.key.sign(text).to_bytes().to_vec()
    }
}

fn ts(ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

fn get_msg<M: Message + Default>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<M>, StoreError> {
    let Some(v) = t.get(key).map_err(db_err)? else {
        return Ok(None);
    };
    M::decode(v.value())
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            what: format!("the snapshot chain's {key:?}"),
            detail: e.to_string(),
        })
}

/// Seals snapshot `id` (its canonical SHA-256 `sha256`) inside the
/// transaction that stores it, after the last seal.
pub(super) fn seal(
    tx: &redb::WriteTransaction,
    sealer: &Sealer,
    instance_id: &str,
    id: u64,
    sha256: &str,
) -> Result<pb::SnapshotSeal, StoreError> {
    let mut chain = tx.open_table(CHAIN).map_err(db_err)?;
    let mut seals = tx.open_table(SEALS).map_err(db_err)?;
    let head: Option<pb::SnapshotSeal> = get_msg(&chain, HEAD)?;
    // A commit retried after a failure that did write: the seal stands.
    if let Some(h) = head.as_ref().filter(|h| h.id == id && h.sha256 == sha256) {
        if let Some(v) = seals.get(id).map_err(db_err)? {
            if let Ok(s) = pb::SnapshotSeal::decode(v.value()) {
                tracing::debug!(id, index = h.chain_index, "snapshot already sealed");
                return Ok(s);
            }
        }
    }
    let (prev_id, prev_sha256, prev_index) =
        head.map_or((0, String::new(), 0), |h| (h.id, h.sha256, h.chain_index));
    let mut s = pb::SnapshotSeal {
        id,
        sha256: sha256.to_owned(),
        prev_id,
        prev_sha256,
        sealed_at: Some(ts(super::now_ns())),
        public_key: sealer.public.clone(),
        chain_index: prev_index + 1,
        ..Default::default()
    };
    s.signature = sealer.sign(&integrity::seal_text(instance_id, &s));
    seals
        .insert(id, s.encode_to_vec().as_slice())
        .map_err(db_err)?;
    let head = pb::SnapshotSeal {
        id,
        sha256: sha256.to_owned(),
        chain_index: s.chain_index,
        ..Default::default()
    };
    chain
        .insert(HEAD, head.encode_to_vec().as_slice())
        .map_err(db_err)?;
    // The key history: a new key is recorded with the first seal it makes.
    let mut keys: pb::ListSealsResponse = get_msg(&chain, KEYS)?.unwrap_or_default();
    if keys.keys.last().map(|k| &k.public_key) != Some(&sealer.public) {
        if let Some(old) = keys.keys.last() {
            tracing::error!(
                old = %integrity::hex(&old.public_key),
                new = %integrity::hex(&sealer.public),
                first = id,
                "the signing key changed (the key file was replaced or lost): verification will report it"
            );
        }
        // The first key: snapshots below the ids handed out so far were
        // stored before sealing (by an earlier version).
        let first_id = if keys.keys.is_empty() {
            let next = tx
                .open_table(super::META)
                .map_err(db_err)?
                .get(super::NEXT_ID)
                .map_err(db_err)?
                .map_or(1, |v| v.value());
            id.max(next.saturating_sub(1))
        } else {
            id
        };
        keys.keys.push(pb::SigningKeyUse {
            public_key: sealer.public.clone(),
            first_id,
            since: s.sealed_at,
        });
        chain
            .insert(KEYS, keys.encode_to_vec().as_slice())
            .map_err(db_err)?;
    }
    drop(seals);
    drop(chain);
    prune(tx, sealer, instance_id, s.chain_index)?;
    Ok(s)
}

/// Marks the seal of an evicted snapshot (same transaction as the
/// eviction).
pub(super) fn evict(
    tx: &redb::WriteTransaction,
    sealer: &Sealer,
    instance_id: &str,
    id: u64,
) -> Result<(), StoreError> {
    let mut seals = tx.open_table(SEALS).map_err(db_err)?;
    let Some(mut s) = seals
        .get(id)
        .map_err(db_err)?
        .and_then(|v| pb::SnapshotSeal::decode(v.value()).ok())
    else {
        return Ok(());
    };
    s.evicted_at = Some(ts(super::now_ns()));
    s.eviction_signature = sealer.sign(&integrity::eviction_text(instance_id, &s));
    seals
        .insert(id, s.encode_to_vec().as_slice())
        .map_err(db_err)?;
    Ok(())
}

/// Beyond [`MAX_SEALS`], removes the oldest seals (by chain position) of
/// evicted snapshots, and signs the new floor: seals at or below it may
/// link to a pruned one. Runs at most once per [`PRUNE_EVERY`] commits.
fn prune(
    tx: &redb::WriteTransaction,
    sealer: &Sealer,
    instance_id: &str,
    index: u64,
) -> Result<(), StoreError> {
    let mut seals = tx.open_table(SEALS).map_err(db_err)?;
    let count = seals.len().map_err(db_err)?;
    if count <= MAX_SEALS {
        return Ok(());
    }
    let mut chain = tx.open_table(CHAIN).map_err(db_err)?;
    let last: Option<pb::SnapshotSeal> = get_msg(&chain, PRUNED_AT)?;
    if last.is_some_and(|l| index < l.chain_index + PRUNE_EVERY) {
        return Ok(());
    }
    let mut evicted: Vec<(u64, u64)> = Vec::new();
    for r in seals.iter().map_err(db_err)? {
        let (k, v) = r.map_err(db_err)?;
        if let Ok(s) = pb::SnapshotSeal::decode(v.value()) {
            if s.evicted_at.is_some() {
                evicted.push((s.chain_index, k.value()));
            }
        }
    }
    evicted.sort_unstable();
    // Down to MAX_SEALS less one round of commits.
    let want = (count - MAX_SEALS + PRUNE_EVERY) as usize;
    let mut floor_index = 0;
    for &(ci, id) in evicted.iter().take(want) {
        seals.remove(id).map_err(db_err)?;
        floor_index = floor_index.max(ci + 1);
    }
    let removed = want.min(evicted.len());
    chain
        .insert(
            PRUNED_AT,
            pb::SnapshotSeal {
                chain_index: index,
                ..Default::default()
            }
            .encode_to_vec()
            .as_slice(),
        )
        .map_err(db_err)?;
    if removed > 0 {
        let old: Option<pb::SnapshotSeal> = get_msg(&chain, FLOOR)?;
        let floor_index = floor_index.max(old.as_ref().map_or(0, |f| f.chain_index));
        // The floor's id: the kept seal at that position, if any.
        let floor_id = seals
            .iter()
            .map_err(db_err)?
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| pb::SnapshotSeal::decode(v.value()).ok())
            .find(|s| s.chain_index == floor_index)
            .map_or(0, |s| s.id);
        let floor = pb::SnapshotSeal {
            id: floor_id,
            chain_index: floor_index,
            public_key: sealer.public.clone(),
            signature: sealer.sign(&integrity::floor_text(instance_id, floor_id, floor_index)),
            ..Default::default()
        };
        chain
            .insert(FLOOR, floor.encode_to_vec().as_slice())
            .map_err(db_err)?;
        tracing::info!(removed, floor_index, "seals of evicted snapshots pruned");
    } else {
        tracing::warn!(
            seals = count,
            "more seals than kept, but none of an evicted snapshot: the store keeps more \
             snapshots than {MAX_SEALS}"
        );
    }
    Ok(())
}

/// The seal of one snapshot.
pub(super) fn get(
    tx: &redb::ReadTransaction,
    id: u64,
) -> Result<Option<pb::SnapshotSeal>, StoreError> {
    let t = match tx.open_table(SEALS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    let Some(v) = t.get(id).map_err(db_err)? else {
        return Ok(None);
    };
    Ok(pb::SnapshotSeal::decode(v.value()).ok())
}

/// A page of seals after `after` (at most `limit`), with the chain's start
/// and key history.
pub(super) fn list(
    db: &redb::Database,
    after: u64,
    limit: usize,
) -> Result<pb::ListSealsResponse, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let mut out = pb::ListSealsResponse::default();
    match tx.open_table(CHAIN) {
        Ok(chain) => {
            if let Some(f) = get_msg::<pb::SnapshotSeal>(&chain, FLOOR)? {
                out.floor_id = f.id;
                out.floor_index = f.chain_index;
                out.floor_signature = f.signature;
                out.floor_public_key = f.public_key;
            }
            if let Some(k) = get_msg::<pb::ListSealsResponse>(&chain, KEYS)? {
                out.keys = k.keys;
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(db_err(e)),
    }
    let t = match tx.open_table(SEALS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(db_err(e)),
    };
    let Some(from) = after.checked_add(1) else {
        return Ok(out);
    };
    let mut iter = t.range(from..).map_err(db_err)?;
    for r in iter.by_ref().take(limit) {
        let (k, v) = r.map_err(db_err)?;
        // An undecodable seal is listed as what it is: a seal that signs
        // nothing (every check then reports it), never an error that
        // would hide the rest of the chain.
        let s = pb::SnapshotSeal::decode(v.value()).unwrap_or_else(|e| {
            tracing::warn!(id = k.value(), err = %e, "an undecodable seal");
            pb::SnapshotSeal {
                id: k.value(),
                sha256: format!("undecodable seal: {e}"),
                ..Default::default()
            }
        });
        out.last_id = k.value();
        out.seals.push(s);
    }
    out.more = iter.next().is_some();
    Ok(out)
}

/// The key that made the newest seal (what the agent says is its key to a
/// reader of its database); `None` before the first seal.
pub(super) fn last_key(db: &redb::Database) -> Result<Option<Vec<u8>>, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let chain = match tx.open_table(CHAIN) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    Ok(get_msg::<pb::ListSealsResponse>(&chain, KEYS)?
        .and_then(|k| k.keys.last().map(|k| k.public_key.clone())))
}
