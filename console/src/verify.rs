//! Checking the agents' evidence as it is copied: the console pins each
//! agent's signing key the first time it meets it (a later change is an
//! integrity problem), checks every snapshot it copies against the seal the
//! agent made (hash, signature, key, the link to the snapshot before it),
//! and audits each agent's chain of seals (at each connection, then every
//! few minutes) for snapshots deleted, seals replaced or re-signed on the
//! node. What does not verify is recorded with the snapshot
//! (`SnapshotInfo.verification`) and the agent (`Agent.integrity_problems`),
//! logged, and shown by ListAgents, `fdrctl agents`, `fdrctl snapshot
//! verify` and the web UI; the evidence itself is kept either way.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use fdr_cli::client::Client;
use fdr_proto::{
    integrity::{self, Chain},
    v1 as pb,
};
use tonic::Code;

use crate::{error::SyncError, index::Index};

/// Problems kept per agent (the newest).
const MAX_PROBLEMS: usize = 100;
/// Problems one audit records, at most (then a count of the rest).
const MAX_PER_AUDIT: usize = 20;

/// Records `problems` of an agent (new ones only), logging each.
pub(crate) async fn note_problems(
    ix: &Arc<Index>,
    instance: &str,
    node: &str,
    problems: Vec<String>,
) -> Result<(), SyncError> {
    if problems.is_empty() {
        return Ok(());
    }
    let inst = instance.to_owned();
    let node = node.to_owned();
    ix.blocking(move |ix| {
        ix.update_agent(&inst, |a| {
            for p in problems {
                if a.integrity_problems.contains(&p) {
                    continue;
                }
                tracing::warn!(agent = %inst, %node, problem = %p, "agent evidence does not verify");
                a.integrity_problems.push(p);
            }
            let over = a.integrity_problems.len().saturating_sub(MAX_PROBLEMS);
            a.integrity_problems.drain(..over);
        })
        .map(|_| ())
    })
    .await?;
    Ok(())
}

/// The key the console trusts for the agent: the one pinned at first
/// contact (pinned now if none is); a different key reported is a problem.
pub(crate) async fn pin_key(
    ix: &Arc<Index>,
    instance: &str,
    node: &str,
    reported: &[u8],
) -> Result<Vec<u8>, SyncError> {
    let inst = instance.to_owned();
    let key = reported.to_vec();
    let rec = ix
        .blocking(move |ix| {
            ix.update_agent(&inst, |a| {
                if a.signing_key.is_empty() && !key.is_empty() {
                    a.signing_key = key;
                }
            })
        })
        .await?;
    if !reported.is_empty() && rec.signing_key != reported {
        note_problems(
            ix,
            instance,
            node,
            vec![format!(
                "the agent's signing key changed: the console pinned {} at first contact, the \
                 agent now reports {} (its key file was replaced or lost; snapshots sealed \
                 with the new key do not verify)",
                integrity::hex(&rec.signing_key),
                integrity::hex(reported)
            )],
        )
        .await?;
    }
    Ok(rec.signing_key)
}

/// The agent's seal of snapshot `id`; `None` when it has none (an agent
/// older than seals, or the seal is gone).
pub(crate) async fn fetch_seal(
    c: &mut Client,
    id: u64,
    limit: Duration,
) -> Result<Option<pb::SnapshotSeal>, SyncError> {
    let req = pb::ListSealsRequest {
        after_id: id.saturating_sub(1),
        limit: 1,
    };
    match tokio::time::timeout(limit, c.list_seals(req)).await {
        Err(_) => Err(SyncError::Timeout {
            what: "ListSeals",
            secs: limit.as_secs(),
        }),
        Ok(Err(s)) if s.code() == Code::Unimplemented => Ok(None),
        // The agent's seals cannot be read (corrupt store): copied without
        // one, which its verification then says.
        Ok(Err(s)) if s.code() == Code::DataLoss => {
            tracing::warn!(id, error = %s.message(), "the agent cannot read its seals");
            Ok(None)
        }
        Ok(Err(s)) => Err(SyncError::Status(s)),
        Ok(Ok(r)) => Ok(r.into_inner().seals.into_iter().find(|s| s.id == id)),
    }
}

/// Text a copy's verification starts with when the agent sent no seal.
pub(crate) const UNSEALED: &str = "not sealed";

/// Whether `s` is a seal retention evicted, signed by `key` (so that a
/// deletion cannot pass for an eviction).
fn evicted_by(s: &pb::SnapshotSeal, instance: &str, key: &[u8]) -> bool {
    s.evicted_at.is_some()
        && s.public_key == key
        && integrity::signed_by(key, &integrity::seal_text(instance, s), &s.signature)
        && integrity::signed_by(
            key,
            &integrity::eviction_text(instance, s),
            &s.eviction_signature,
        )
}

/// What a copied snapshot's check found: "verified", or every problem.
/// `data_sha256`: the hash of the encoding the agent sent; `prev_copy`:
/// the console's copy of the snapshot sealed before it, if held.
pub(crate) fn check_copy(
    instance: &str,
    key: &[u8],
    id: u64,
    data_sha256: &str,
    seal: Option<&pb::SnapshotSeal>,
    prev_copy: Option<&str>,
) -> String {
    let Some(seal) = seal else {
        return format!(
            "{UNSEALED} by the agent (stored before it sealed snapshots, or its seal is gone: \
             the chain audit tells)"
        );
    };
    let mut problems: Vec<String> = integrity::check_data(id, Ok(data_sha256), Some(seal), "", 0)
        .into_iter()
        .map(|p| p.what)
        .collect();
    if key.is_empty() {
        problems.push("the console has no key of the agent to check the seal with".into());
    } else if seal.public_key != key {
        problems.push(format!(
            "sealed by key {}, not the agent's key {} pinned at first contact (re-signed with \
             another key?)",
            integrity::key_name(&seal.public_key),
            integrity::key_name(key)
        ));
    }
    if !integrity::signed_by(
        &seal.public_key,
        &integrity::seal_text(instance, seal),
        &seal.signature,
    ) {
        problems.push("its seal's signature does not verify: the seal was altered".into());
    }
    if let Some(prev) = prev_copy {
        if prev != seal.prev_sha256 {
            problems.push(format!(
                "it links to the agent's snapshot {} as SHA-256 {}, but the console's copy of \
                 that snapshot is {prev}: the chain was altered on the node",
                seal.prev_id, seal.prev_sha256
            ));
        }
    }
    if problems.is_empty() {
        "verified".into()
    } else {
        problems.join("; ")
    }
}

/// Audits the agent's chain of seals against the pinned key and the
/// snapshots it holds; records what does not verify.
pub(crate) async fn audit_chain(
    ix: &Arc<Index>,
    limit: Duration,
    c: &mut Client,
    instance: &str,
    node: &str,
    key: &[u8],
) -> Result<(), SyncError> {
    let mut chain = Chain::default();
    let mut after = 0;
    loop {
        let req = pb::ListSealsRequest {
            after_id: after,
            limit: 0,
        };
        let page = match tokio::time::timeout(limit, c.list_seals(req)).await {
            Err(_) => {
                return Err(SyncError::Timeout {
                    what: "ListSeals",
                    secs: limit.as_secs(),
                })
            }
            // An agent that once sealed (a key is pinned) and no longer
            // can: downgraded, or its store damaged.
            Ok(Err(s)) if matches!(s.code(), Code::Unimplemented | Code::DataLoss) => {
                if !key.is_empty() {
                    note_problems(
                        ix,
                        instance,
                        node,
                        vec![format!(
                            "on the node: its seals cannot be listed ({}: {}), although it \
                             sealed before",
                            s.code(),
                            s.message()
                        )],
                    )
                    .await?;
                }
                return Ok(());
            }
            Ok(Err(s)) => return Err(SyncError::Status(s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        let more = page.more;
        after = page.last_id;
        chain.add_page(page);
        if !more || after == 0 {
            break;
        }
    }
    if chain.instance_id.is_empty() {
        chain.instance_id = instance.to_owned();
    }
    let mut stored = BTreeSet::new();
    let mut req = pb::ListSnapshotsRequest::default();
    loop {
        let page = match tokio::time::timeout(limit, c.list_snapshots(req.clone())).await {
            Err(_) => {
                return Err(SyncError::Timeout {
                    what: "ListSnapshots",
                    secs: limit.as_secs(),
                })
            }
            Ok(r) => r.map_err(SyncError::Status)?.into_inner(),
        };
        stored.extend(
            page.snapshots
                .iter()
                .filter(|i| !i.open && (i.bytes > 0 || i.seal.is_some()))
                .map(|i| i.id),
        );
        if page.next_cursor.is_empty() {
            break;
        }
        req.cursor = page.next_cursor;
    }
    let mut problems = Vec::new();
    // What the console copied, against what the node has now.
    let inst = instance.to_owned();
    let held = ix.blocking(move |ix| ix.held_seals(&inst)).await?;
    for (id, copied) in held {
        match chain.seals.get(&id) {
            Some(now) if now.sha256 != copied.sha256 || now.signature != copied.signature => {
                problems.push(format!(
                    "on the node: snapshot {id}: its seal is not the one the console copied \
                     with it (SHA-256 {} then, {} now): the seal was replaced on the node",
                    copied.sha256, now.sha256
                ));
            }
            Some(_) => {}
            // Pruned (evicted long ago).
            None if copied.chain_index < chain.floor_index => {}
            None => problems.push(format!(
                "on the node: snapshot {id}: deleted with its seal (the console holds its \
                 copy, SHA-256 {})",
                copied.sha256
            )),
        }
    }
    for p in chain.check(key, &stored) {
        // Committed or evicted meanwhile: the seal now says so.
        if p.racy {
            match fetch_seal(c, p.id, limit).await? {
                Some(s) if evicted_by(&s, &chain.instance_id, key) => continue,
                Some(s)
                    if !chain.seals.contains_key(&p.id)
                        && s.public_key == key
                        && integrity::signed_by(
                            key,
                            &integrity::seal_text(&chain.instance_id, &s),
                            &s.signature,
                        ) =>
                {
                    continue
                }
                _ => {}
            }
        }
        problems.push(format!("on the node: {p}"));
    }
    // A change of key makes every later seal a problem: the first ones say
    // enough.
    if problems.len() > MAX_PER_AUDIT {
        let more = problems.len() - MAX_PER_AUDIT;
        problems.truncate(MAX_PER_AUDIT);
        problems.push(format!(
            "on the node: {more} more problems (`fdrctl snapshot verify --all` against the \
             agent lists them)"
        ));
    }
    note_problems(ix, instance, node, problems).await
}
