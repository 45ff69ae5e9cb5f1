//! Writes seeds for the `snapshot` fuzz target from a real data directory:
//! each stored snapshot, cut to a few events of each kind (every audit
//! kept), encoded as the store encodes it, and each index entry
//! (`SnapshotInfo`). Run against a stopped agent's data directory:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds -- DATA_DIR fuzz/corpus/snapshot
//! ```

use std::{collections::HashMap, path::PathBuf};

use fdr_agent::recorder::store::{Retention, Store};
use fdr_proto::v1 as pb;
use prost::Message;

/// Events kept per kind, and in all, per snapshot; processes kept; ancestors
/// kept per event (seeds stay small, so that fuzzing runs fast).
const PER_KIND: usize = 2;
const MAX_EVENTS: usize = 24;
const MAX_PROCESSES: usize = 8;
const MAX_ANCESTORS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(data), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: seeds DATA_DIR OUT_DIR".into());
    };
    std::fs::create_dir_all(&out)?;
    let store = Store::open(
        &data,
        Retention {
            max_snapshots: usize::MAX,
            max_bytes: u64::MAX,
        },
    )?;
    for info in store.list()? {
        std::fs::write(out.join(format!("info-{}", info.id)), info.encode_to_vec())?;
        let Some(mut snap) = store.get(info.id)? else {
            continue;
        };
        let mut per_kind: HashMap<i32, usize> = HashMap::new();
        snap.events.retain(|e| {
            let audit = matches!(e.detail, Some(pb::event::Detail::Audit(_)));
            let n = per_kind.entry(e.kind).or_default();
            *n += 1;
            audit || *n <= PER_KIND
        });
        snap.events.truncate(MAX_EVENTS);
        for e in &mut snap.events {
            e.ancestry.truncate(MAX_ANCESTORS);
        }
        snap.processes.truncate(MAX_PROCESSES);
        let bytes = snap.encode_to_vec();
        println!(
            "snapshot {}: {} events, {} processes, {} bytes",
            info.id,
            snap.events.len(),
            snap.processes.len(),
            bytes.len()
        );
        std::fs::write(out.join(format!("snapshot-{}", info.id)), bytes)?;
    }
    Ok(())
}
