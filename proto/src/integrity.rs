//! Evidence integrity: what an agent's snapshot seals sign, and how a
//! reader (`fdrctl snapshot verify`, a console on ingest) checks them.
//!
//! A snapshot's hash is the SHA-256 of its canonical encoding: the
//! `fdr.v1.Snapshot` message as stored, with the fields of its `info` that
//! describe the hash itself (`sha256`, `seal`, `verification`) empty; it is
//! what ExportSnapshot's "protobuf" format sends and what a console names
//! its copy by. The agent signs (Ed25519) each snapshot's hash together
//! with the hash of the snapshot it committed before ([`seal_text`]), so
//! that its snapshots form a chain: an altered snapshot no longer matches
//! its seal, a deleted one leaves a link to nothing (or a seal with no
//! snapshot that retention did not evict), and a seal made with another
//! key does not verify with the agent's.
//!
//! [`Chain::check`] does every check that needs no snapshot data (the
//! signatures, the links, evictions, the chain's start, the key history);
//! [`check_data`] compares one snapshot's data with its seal.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1 as pb;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes from hex (either case); `None` when it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// SHA-256 of `data`, as hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// A short name for a public key: its first 16 hex digits.
pub fn key_name(key: &[u8]) -> String {
    let h = hex(key);
    h.get(..16).unwrap_or(&h).to_owned()
}

/// Clears the fields of a snapshot's info that describe its hash.
pub fn canonicalize(snap: &mut pb::Snapshot) {
    if let Some(info) = snap.info.as_mut() {
        info.sha256.clear();
        info.seal = None;
        info.verification.clear();
    }
}

/// The canonical encoding of a snapshot (see the module's header).
pub fn canonical_bytes(snap: &pb::Snapshot) -> Vec<u8> {
    let hashed = snap
        .info
        .as_ref()
        .is_some_and(|i| !i.sha256.is_empty() || i.seal.is_some() || !i.verification.is_empty());
    if hashed {
        let mut copy = snap.clone();
        canonicalize(&mut copy);
        copy.encode_to_vec()
    } else {
        snap.encode_to_vec()
    }
}

/// The SHA-256 (hex) of a snapshot's canonical encoding.
pub fn snapshot_sha256(snap: &pb::Snapshot) -> String {
    sha256_hex(&canonical_bytes(snap))
}

fn ts_nanos(t: Option<&prost_types::Timestamp>) -> i128 {
    t.map_or(0, |t| {
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
    })
}

/// What a seal's signature covers: a fixed text, so that no other message
/// the key signs can pass for a seal.
pub fn seal_text(instance_id: &str, s: &pb::SnapshotSeal) -> Vec<u8> {
    format!(
        "fdr.v1.SnapshotSeal\ninstance={instance_id}\nid={}\nsha256={}\nprev_id={}\nprev_sha256={}\nsealed_at_ns={}\nchain_index={}\n",
        s.id,
        s.sha256,
        s.prev_id,
        s.prev_sha256,
        ts_nanos(s.sealed_at.as_ref()),
        s.chain_index
    )
    .into_bytes()
}

/// What an eviction's signature covers.
pub fn eviction_text(instance_id: &str, s: &pb::SnapshotSeal) -> Vec<u8> {
    format!(
        "fdr.v1.SnapshotSeal.evicted\ninstance={instance_id}\nid={}\nsha256={}\nevicted_at_ns={}\n",
        s.id,
        s.sha256,
        ts_nanos(s.evicted_at.as_ref())
    )
    .into_bytes()
}

/// What the chain's start (the first seal kept after older ones were
/// pruned) signature covers.
pub fn floor_text(instance_id: &str, floor_id: u64, floor_index: u64) -> Vec<u8> {
    format!(
        "fdr.v1.SnapshotSeal.floor\ninstance={instance_id}\nfloor_id={floor_id}\nfloor_index={floor_index}\n"
    )
    .into_bytes()
}

/// Whether `signature` is `key`'s Ed25519 signature of `text`.
pub fn signed_by(key: &[u8], text: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify(text, &sig).is_ok()
}

/// One thing that does not verify, about snapshot `id` (0: the chain or
/// the store as a whole).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub id: u64,
    pub what: String,
    /// A snapshot committed or evicted between reading the seals and the
    /// list of snapshots also looks like this: a reader of a live agent
    /// checks the seal again before it reports it.
    pub racy: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.id == 0 {
            f.write_str(&self.what)
        } else {
            write!(f, "snapshot {}: {}", self.id, self.what)
        }
    }
}

/// An agent's seals, as ListSeals gives them (every page).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub instance_id: String,
    pub seals: BTreeMap<u64, pb::SnapshotSeal>,
    pub floor_id: u64,
    pub floor_index: u64,
    pub floor_signature: Vec<u8>,
    pub floor_public_key: Vec<u8>,
    pub keys: Vec<pb::SigningKeyUse>,
}

impl Chain {
    /// The first snapshot id the agent sealed (snapshots below it were
    /// stored before it sealed); `u64::MAX` when it sealed none.
    pub fn sealed_from(&self) -> u64 {
        self.keys.first().map_or(u64::MAX, |k| k.first_id)
    }

    /// Adds a page of ListSeals.
    pub fn add_page(&mut self, page: pb::ListSealsResponse) {
        self.instance_id = page.instance_id;
        // Pruning may move the start between pages: the latest holds.
        if page.floor_index >= self.floor_index {
            self.floor_id = page.floor_id;
            self.floor_index = page.floor_index;
            self.floor_signature = page.floor_signature;
            self.floor_public_key = page.floor_public_key;
        }
        self.keys = page.keys;
        for s in page.seals {
            self.seals.insert(s.id, s);
        }
    }

    /// The checks that need no snapshot data, against the key the reader
    /// trusts (`key`: pinned by a console, given to fdrctl, or the key the
    /// agent says it has) and the ids of the snapshots the store holds
    /// (committed ones). Problems are sorted by snapshot id.
    pub fn check(&self, key: &[u8], stored: &BTreeSet<u64>) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut racy: Vec<(u64, String)> = Vec::new();
        let mut p = |id: u64, what: String| {
            out.push(Problem {
                id,
                what,
                racy: false,
            })
        };
        let inst = &self.instance_id;
        if self.keys.len() > 1 {
            let list: Vec<String> = self
                .keys
                .iter()
                .map(|k| format!("{} from snapshot {}", key_name(&k.public_key), k.first_id))
                .collect();
            p(
                0,
                format!(
                    "the agent's signing key changed ({}): its key file was replaced or lost",
                    list.join(", then ")
                ),
            );
        }
        if self.floor_index != 0
            && (!signed_by(
                &self.floor_public_key,
                &floor_text(inst, self.floor_id, self.floor_index),
                &self.floor_signature,
            ) || self.floor_public_key != key)
        {
            p(
                0,
                format!(
                    "the chain's start (snapshot {}, older seals pruned) is not signed by \
                     key {}: seals before it may have been removed",
                    self.floor_id,
                    key_name(key)
                ),
            );
        }
        // Who links to whom.
        let mut successors: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for s in self.seals.values() {
            if s.prev_id != 0 {
                successors.entry(s.prev_id).or_default().push(s.id);
            }
        }
        for (&id, s) in &self.seals {
            if s.public_key != key {
                p(
                    id,
                    format!(
                        "sealed by key {}, not the agent's key {} (re-signed with another key?)",
                        key_name(&s.public_key),
                        key_name(key)
                    ),
                );
            }
            if !signed_by(&s.public_key, &seal_text(inst, s), &s.signature) {
                p(
                    id,
                    "its seal's signature does not verify: the seal was altered".into(),
                );
            }
            // The link to the snapshot committed before it (a seal at or
            // below the floor may link to a pruned one).
            let pruned_before = s.chain_index <= self.floor_index;
            if s.prev_id == id {
                p(id, "its seal links to itself: the seal was forged".into());
            } else if s.prev_id == 0 {
                if s.chain_index > 1 && !pruned_before {
                    p(
                        id,
                        format!(
                            "its seal starts a chain at position {}, but the chain started \
                             earlier: seals were replaced",
                            s.chain_index
                        ),
                    );
                }
            } else {
                match self.seals.get(&s.prev_id) {
                    Some(prev)
                        if prev.sha256 == s.prev_sha256
                            && prev.chain_index + 1 == s.chain_index => {}
                    Some(prev) if prev.sha256 == s.prev_sha256 => p(
                        id,
                        format!(
                            "it is at position {} of the chain, but links to snapshot {} at \
                             position {}: seals were removed or inserted",
                            s.chain_index, s.prev_id, prev.chain_index
                        ),
                    ),
                    Some(prev) => p(
                        id,
                        format!(
                            "it links to snapshot {} with SHA-256 {}, but that snapshot's seal \
                             says {}: a seal was replaced",
                            s.prev_id, s.prev_sha256, prev.sha256
                        ),
                    ),
                    None if pruned_before => {}
                    None => racy.push((
                        s.prev_id,
                        format!(
                            "deleted: snapshot {id} links to it (SHA-256 {}), but neither it nor \
                             its seal is in the store, and retention did not evict it",
                            s.prev_sha256
                        ),
                    )),
                }
            }
            if let Some(next) = successors.get(&id) {
                if next.len() > 1 {
                    p(
                        id,
                        format!(
                            "more than one seal ({:?}) links to it: the chain was forked",
                            next
                        ),
                    );
                }
            }
            // Data: kept, or evicted by retention (signed).
            if s.evicted_at.is_some() {
                if !signed_by(
                    &s.public_key,
                    &eviction_text(inst, s),
                    &s.eviction_signature,
                ) {
                    p(
                        id,
                        "it is marked as evicted by retention, but that mark's signature does \
                         not verify: the eviction was forged"
                            .into(),
                    );
                }
            } else if !stored.contains(&id) {
                racy.push((
                    id,
                    "deleted: its seal is kept and retention did not evict it, but the \
                     snapshot is not in the store"
                        .into(),
                ));
            }
        }
        // Snapshots with no seal, among the sealed ones (those stored
        // before the agent sealed are older than its first key).
        let first_sealed = self.keys.first().map_or(0, |k| k.first_id);
        if let Some(&first) = self.seals.keys().next() {
            let first = first.max(first_sealed);
            for &id in stored.range(first..) {
                if !self.seals.contains_key(&id) {
                    racy.push((
                        id,
                        "not sealed, although the snapshots around it are: its seal was \
                         deleted, or it was put in the store by something else"
                            .into(),
                    ));
                }
            }
        }
        out.extend(racy.into_iter().map(|(id, what)| Problem {
            id,
            what,
            racy: true,
        }));
        out.sort();
        out.dedup();
        out
    }
}

/// Compares a snapshot's data (its canonical encoding's SHA-256, or why it
/// could not be read) with its seal and with the hash its summary gives.
/// `sealed_from`: the first id sealed (see [`Chain::sealed_from`]); a
/// snapshot below it was stored before the agent sealed, and its missing
/// seal is no problem.
pub fn check_data(
    id: u64,
    data_sha256: Result<&str, &str>,
    seal: Option<&pb::SnapshotSeal>,
    listed_sha256: &str,
    sealed_from: u64,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut p = |what: String| {
        out.push(Problem {
            id,
            what,
            racy: false,
        })
    };
    match (data_sha256, seal) {
        (Err(why), _) => p(format!(
            "its stored data cannot be read ({why}): altered or damaged"
        )),
        (Ok(_), None) if id < sealed_from => {}
        (Ok(_), None) => p("it has no seal: its hash cannot be checked against one".into()),
        (Ok(sha), Some(seal)) => {
            if sha != seal.sha256 {
                p(format!(
                    "altered: its data hashes to SHA-256 {sha}, but it was sealed as {}",
                    seal.sha256
                ));
            }
            if !listed_sha256.is_empty() && listed_sha256 != seal.sha256 {
                p(format!(
                    "its summary gives SHA-256 {listed_sha256}, but it was sealed as {}",
                    seal.sha256
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn chain(k: &SigningKey, n: u64) -> Chain {
        let mut c = Chain {
            instance_id: "inst".into(),
            ..Chain::default()
        };
        let (mut prev_id, mut prev_sha) = (0, String::new());
        for id in 1..=n {
            let mut s = pb::SnapshotSeal {
                id,
                sha256: sha256_hex(&id.to_le_bytes()),
                prev_id,
                prev_sha256: prev_sha.clone(),
                sealed_at: ts(id as i64),
                chain_index: id,
                public_key: k.verifying_key().to_bytes().to_vec(),
                ..Default::default()
            };
            s.signature = k.sign(&seal_text("inst", &s)).to_bytes().to_vec();
            prev_id = id;
            prev_sha = s.sha256.clone();
            c.seals.insert(id, s);
        }
        c
    }

    fn all(n: u64) -> BTreeSet<u64> {
        (1..=n).collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let k = key(1);
        let c = chain(&k, 5);
        assert_eq!(c.check(&k.verifying_key().to_bytes(), &all(5)), vec![]);
    }

    #[test]
    fn deletions_resignings_and_forged_evictions_are_found() {
        let k = key(1);
        let pk = k.verifying_key().to_bytes();
        // Snapshot 3 deleted with its seal.
        let mut c = chain(&k, 5);
        c.seals.remove(&3);
        let mut stored = all(5);
        stored.remove(&3);
        let found = c.check(&pk, &stored);
        assert!(
            found
                .iter()
                .any(|p| p.id == 3 && p.what.starts_with("deleted")),
            "{found:?}"
        );
        // Only its data.
        let c = chain(&k, 5);
        let found = c.check(&pk, &stored);
        assert!(found
            .iter()
            .any(|p| p.id == 3 && p.what.contains("not in the store")));
        // Evicted properly: fine; with a forged mark: found.
        let mut c = chain(&k, 5);
        let s = c.seals.get_mut(&3).unwrap();
        s.evicted_at = ts(99);
        s.eviction_signature = k.sign(&eviction_text("inst", s)).to_bytes().to_vec();
        assert_eq!(c.check(&pk, &stored), vec![]);
        let s = c.seals.get_mut(&3).unwrap();
        s.eviction_signature = key(2).sign(&eviction_text("inst", s)).to_bytes().to_vec();
        assert!(c.check(&pk, &stored)[0].what.contains("forged"));
        // Re-signed with another key.
        let mut c = chain(&k, 5);
        let other = key(2);
        let s = c.seals.get_mut(&4).unwrap();
        s.sha256 = sha256_hex(b"altered");
        s.public_key = other.verifying_key().to_bytes().to_vec();
        s.signature = other.sign(&seal_text("inst", s)).to_bytes().to_vec();
        let found = c.check(&pk, &all(5));
        assert!(found
            .iter()
            .any(|p| p.id == 4 && p.what.contains("another key")));
        // …and its successor's link no longer matches.
        assert!(found
            .iter()
            .any(|p| p.id == 5 && p.what.contains("replaced")));
    }

    #[test]
    fn data_is_compared_with_its_seal() {
        let k = key(1);
        let c = chain(&k, 1);
        let seal = c.seals.get(&1);
        let good = sha256_hex(&1u64.to_le_bytes());
        assert!(check_data(1, Ok(&good), seal, &good, 1).is_empty());
        assert!(check_data(1, Ok("00"), seal, &good, 1)[0]
            .what
            .starts_with("altered"));
        assert!(!check_data(1, Err("bad"), seal, "", 1).is_empty());
        assert!(
            check_data(1, Ok(&good), None, "", 2).is_empty(),
            "stored before sealing"
        );
        assert!(!check_data(2, Ok(&good), None, "", 2).is_empty());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("zz"), None);
    }
}
