//! `fdrctl snapshot verify`: checks snapshots against the agent's seals —
//! the hash of each snapshot's data, the signatures, and the chain the
//! seals form (nothing deleted, replaced or re-signed) — here, on the data
//! the agent or console sends, not by asking it. Against a console: its
//! copy against the seal the agent made, with the key the console pinned
//! when it first met the agent, and what the console found on ingest.

use std::{collections::BTreeSet, io::Write};

use fdr_proto::{
    integrity::{self, Chain, Problem},
    v1 as pb,
};
use serde_json::json;

use super::{escape::escape as e, quiet_pipe, CtlError, Result};
use crate::client::{Client, Console};

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The snapshots to verify (none: every stored one, with --all).
    pub ids: Vec<u64>,
    /// Every stored snapshot.
    #[arg(long)]
    pub all: bool,
    /// The agent's public key to trust (64 hex digits), as `fdrctl identity`
    /// printed it earlier or a console pinned it. Default: the key the
    /// agent reports now (which a replaced key file changes too).
    #[arg(long)]
    pub key: Option<String>,
    /// One JSON object per snapshot, and one for the chain.
    #[arg(long)]
    pub json: bool,
}

/// What was checked, for the report.
struct Outcome {
    /// Per snapshot asked for: its hash as read, and its problems.
    snapshots: Vec<(u64, String, Vec<Problem>)>,
    /// Problems of the chain (or the agent) as a whole, or of snapshots
    /// not asked for.
    chain: Vec<Problem>,
    /// A line saying what the chain was checked against.
    about: String,
}

pub async fn verify(
    client: &mut Client,
    console: Option<&mut Console>,
    args: &VerifyArgs,
    out: &mut impl Write,
) -> Result<()> {
    if args.ids.is_empty() && !args.all {
        return Err(CtlError::Usage(
            "give the snapshot ids to verify, or --all".into(),
        ));
    }
    let key_arg = match &args.key {
        Some(k) => Some(
            integrity::unhex(k)
                .filter(|k| k.len() == 32)
                .ok_or_else(|| {
                    CtlError::Usage("--key: 64 hex digits (an Ed25519 public key)".into())
                })?,
        ),
        None => None,
    };
    let identity = client
        .get_identity(pb::GetIdentityRequest {})
        .await?
        .into_inner();
    let outcome = if identity.role == "console" {
        let Some(console) = console else {
            return Err(CtlError::Usage("no console connection".into()));
        };
        let infos = list_all(client).await?;
        verify_console(client, console, &infos, key_arg, args).await?
    } else {
        verify_agent(client, &identity, key_arg, args).await?
    };
    report(&outcome, args.json, out)
}

async fn list_all(client: &mut Client) -> Result<Vec<pb::SnapshotInfo>> {
    let mut req = pb::ListSnapshotsRequest::default();
    let mut all = Vec::new();
    loop {
        let page = client.list_snapshots(req.clone()).await?.into_inner();
        all.extend(page.snapshots);
        if page.next_cursor.is_empty() {
            return Ok(all);
        }
        req.cursor = page.next_cursor;
    }
}

/// The SHA-256 of a snapshot's canonical encoding as sent, or why it
/// could not be had.
async fn data_sha256(client: &mut Client, id: u64) -> std::result::Result<String, String> {
    let mut stream = client
        .export_snapshot(pb::ExportSnapshotRequest {
            id,
            format: "protobuf".into(),
        })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_owned())? {
        data.extend_from_slice(&chunk.data);
    }
    // The bytes as sent are the canonical encoding (never re-encoded
    // here: a field this fdrctl does not know would be lost).
    Ok(integrity::sha256_hex(&data))
}

/// The agent's seal of `id` as it is now.
async fn seal_now(client: &mut Client, id: u64) -> Result<Option<pb::SnapshotSeal>> {
    Ok(client
        .list_seals(pb::ListSealsRequest {
            after_id: id.saturating_sub(1),
            limit: 1,
        })
        .await?
        .into_inner()
        .seals
        .into_iter()
        .find(|s| s.id == id))
}

/// Whether `s` is a seal of `id` that retention evicted, as signed by
/// `key` (a deletion passed off as an eviction does not verify).
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

fn targets(args: &VerifyArgs, stored: &BTreeSet<u64>) -> Vec<u64> {
    if args.all {
        stored.iter().copied().collect()
    } else {
        args.ids.clone()
    }
}

async fn verify_agent(
    client: &mut Client,
    identity: &pb::Identity,
    key_arg: Option<Vec<u8>>,
    args: &VerifyArgs,
) -> Result<Outcome> {
    let mut chain = Chain::default();
    let mut after = 0;
    loop {
        let page = client
            .list_seals(pb::ListSealsRequest {
                after_id: after,
                limit: 0,
            })
            .await?
            .into_inner();
        let more = page.more;
        after = page.last_id;
        chain.add_page(page);
        if !more || after == 0 {
            break;
        }
    }
    if chain.instance_id.is_empty() {
        chain.instance_id = identity.instance_id.clone();
    }
    // Listed after the seals: a snapshot committed in between has a seal
    // this check does not have (looked up again below).
    let infos = &list_all(client).await?;
    let key = key_arg.unwrap_or_else(|| identity.signing_key.clone());
    // Stored: committed (not open, not waiting for the committer).
    let stored: BTreeSet<u64> = infos
        .iter()
        .filter(|i| !i.open && (i.bytes > 0 || i.seal.is_some()))
        .map(|i| i.id)
        .collect();
    let mut chain_problems = Vec::new();
    for p in chain.check(&key, &stored) {
        // Committed or evicted between the two listings: its seal says so.
        if p.racy {
            match seal_now(client, p.id).await? {
                Some(s) if evicted_by(&s, &chain.instance_id, &key) => continue,
                Some(s)
                    if !chain.seals.contains_key(&p.id)
                        && s.public_key == key
                        && integrity::signed_by(
                            &key,
                            &integrity::seal_text(&chain.instance_id, &s),
                            &s.signature,
                        ) =>
                {
                    continue
                }
                _ => {}
            }
        }
        chain_problems.push(p);
    }
    let mut snapshots = Vec::new();
    for id in targets(args, &stored) {
        let info = infos.iter().find(|i| i.id == id);
        let seal = chain.seals.get(&id);
        let mut problems: Vec<Problem> = Vec::new();
        let mut sha = String::new();
        if info.is_none() && seal.is_some_and(|s| evicted_by(s, &chain.instance_id, &key)) {
            sha = "evicted by retention; its seal verifies".into();
        } else if info.is_none() && seal.is_none() {
            problems.push(Problem {
                id,
                what: "no such snapshot, and no seal of it".into(),
                racy: false,
            });
        } else if info.is_some_and(|i| i.open || (i.bytes == 0 && i.seal.is_none())) {
            problems.push(Problem {
                id,
                what: "not committed yet (its window is still open): nothing to verify yet".into(),
                racy: false,
            });
        } else if stored.contains(&id) {
            let got = data_sha256(client, id).await;
            let evicted_meanwhile = match &got {
                Ok(_) => false,
                Err(_) => seal_now(client, id)
                    .await?
                    .is_some_and(|s| evicted_by(&s, &chain.instance_id, &key)),
            };
            if evicted_meanwhile {
                sha = "evicted by retention during this check; its seal verifies".into();
            } else {
                if let Ok(s) = &got {
                    sha = format!("sha256 {s}");
                }
                if seal.is_none() && id < chain.sealed_from() {
                    sha += ", stored before this agent sealed snapshots: not sealed";
                }
                let listed = info.map_or("", |i| i.sha256.as_str());
                problems.extend(integrity::check_data(
                    id,
                    got.as_deref().map_err(|e| e.as_str()),
                    seal,
                    listed,
                    chain.sealed_from(),
                ));
            }
        }
        // The chain's findings about this snapshot belong to it.
        chain_problems.retain(|p| {
            if p.id == id {
                problems.push(p.clone());
                false
            } else {
                true
            }
        });
        problems.sort();
        problems.dedup();
        snapshots.push((id, sha, problems));
    }
    let about = format!(
        "chain of {} seals on agent {} ({}), checked with key {}{}",
        chain.seals.len(),
        identity.instance_id,
        identity.node,
        integrity::hex(&key),
        if args.key.is_some() {
            " (given)"
        } else {
            " (as the agent reports it)"
        }
    );
    Ok(Outcome {
        snapshots,
        chain: chain_problems,
        about,
    })
}

async fn verify_console(
    client: &mut Client,
    console: &mut Console,
    infos: &[pb::SnapshotInfo],
    key_arg: Option<Vec<u8>>,
    args: &VerifyArgs,
) -> Result<Outcome> {
    let agents = console
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    let stored: BTreeSet<u64> = infos.iter().map(|i| i.id).collect();
    let mut snapshots = Vec::new();
    let mut chain = Vec::new();
    let mut seen_agents = BTreeSet::new();
    for id in targets(args, &stored) {
        let mut problems = Vec::new();
        let mut p = |what: String| {
            problems.push(Problem {
                id,
                what,
                racy: false,
            })
        };
        let Some(info) = infos.iter().find(|i| i.id == id) else {
            p("the console holds no such snapshot".into());
            snapshots.push((id, String::new(), problems));
            continue;
        };
        let agent = agents.iter().find(|a| a.instance_id == info.agent_instance);
        let key = key_arg
            .clone()
            .or_else(|| agent.map(|a| a.signing_key.clone()))
            .unwrap_or_default();
        let got = data_sha256(client, id).await;
        let sha = got
            .as_ref()
            .map(|s| format!("sha256 {s}"))
            .unwrap_or_default();
        // A copy with no seal is from an agent that did not seal: the
        // console's own verdict (below) says so.
        for pr in integrity::check_data(
            id,
            got.as_deref().map_err(|e| e.as_str()),
            info.seal.as_ref(),
            "",
            u64::MAX,
        ) {
            p(pr.what);
        }
        if let Some(seal) = &info.seal {
            if key.is_empty() {
                p("the console has no key of its agent to check the seal with".into());
            } else if seal.public_key != key {
                p(format!(
                    "sealed by key {}, not the agent's key {}",
                    integrity::key_name(&seal.public_key),
                    integrity::key_name(&key)
                ));
            } else if !integrity::signed_by(
                &key,
                &integrity::seal_text(&info.agent_instance, seal),
                &seal.signature,
            ) {
                p("its seal's signature does not verify: the seal was altered".into());
            }
        }
        if !info.verification.is_empty() && info.verification != "verified" {
            p(format!(
                "the console found on ingest: {}",
                info.verification
            ));
        }
        if let Some(a) = agent {
            if seen_agents.insert(a.instance_id.clone()) {
                for pr in &a.integrity_problems {
                    chain.push(Problem {
                        id: 0,
                        what: format!("agent {} ({}): {pr}", a.instance_id, a.node),
                        racy: false,
                    });
                }
            }
        }
        snapshots.push((id, sha, problems));
    }
    Ok(Outcome {
        snapshots,
        chain,
        about: "the console's copies, checked against their agents' seals".into(),
    })
}

fn report(o: &Outcome, json: bool, out: &mut impl Write) -> Result<()> {
    let mut text = String::new();
    for (id, sha, problems) in &o.snapshots {
        if json {
            let v = json!({
                "id": id, "status": sha, "verified": problems.is_empty(),
                "problems": problems.iter().map(|p| p.what.clone()).collect::<Vec<_>>(),
            });
            text += &super::escape::json(&v);
            text.push('\n');
        } else if problems.is_empty() {
            text += &format!("snapshot {id}: verified ({sha})\n");
        } else {
            text += &format!("snapshot {id}: NOT VERIFIED\n");
            for p in problems {
                text += &format!("  - {}\n", e(&p.what));
            }
        }
    }
    if json {
        let v = json!({
            "chain": o.about, "verified": o.chain.is_empty(),
            "problems": o.chain.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        text += &super::escape::json(&v);
        text.push('\n');
    } else if o.chain.is_empty() {
        text += &format!("{}: verified\n", e(&o.about));
    } else {
        text += &format!("{}: NOT VERIFIED\n", e(&o.about));
        for p in &o.chain {
            text += &format!("  - {}\n", e(&p.to_string()));
        }
    }
    quiet_pipe(out.write_all(text.as_bytes()))?;
    let bad = o.snapshots.iter().filter(|s| !s.2.is_empty()).count();
    if bad > 0 || !o.chain.is_empty() {
        return Err(CtlError::Unverified(format!(
            "{bad} of {} snapshots did not verify; {} problems with the chain",
            o.snapshots.len(),
            o.chain.len()
        )));
    }
    Ok(())
}
