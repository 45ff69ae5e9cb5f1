//! A snapshot as stored in the database, through everything that reads it:
//! `Store::get` (`store::compact::decode`: zstd and the tables, or a
//! plain `fdr.v1.Snapshot`), the agent's
//! `GetSnapshot` (filter and pages, as in `api/service.rs`) and
//! `ExportSnapshot` (CSV, JSON Lines), then `fdrctl`'s rendering of the
//! pages (`snapshot list`, `snapshot show`, `incidents show`; text and
//! JSON). A corrupt but decodable snapshot must panic neither the agent
//! nor `fdrctl`. The same bytes are also tried as the index entry
//! (`fdr.v1.SnapshotInfo`) that `snapshot list` reads.
#![no_main]

use fdr_agent::api::{
    export,
    query::{self, EventQuery},
};
use fdr_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// `GetSnapshot`'s answers, page after page, as `fdrctl` asks for them
/// (following `next_cursor`), built by the agent's own `query::snapshot_page`.
fn get_snapshot(
    snap: &pb::Snapshot,
    kinds: &[i32],
    text: &str,
    limit: u32,
) -> Vec<Vec<pb::GetSnapshotResponse>> {
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        // The agent rejects a bad request before reading the snapshot; the
        // cursors it hands out itself must always parse.
        let q = EventQuery::new(kinds, None, None, text, &cursor, limit)
            .expect("a request fdrctl sends, with a cursor the agent made");
        let out = query::snapshot_page(&q, snap.clone(), cursor.is_empty());
        let next = out.iter().find_map(|r| match &r.item {
            Some(pb::get_snapshot_response::Item::NextCursor(c)) => Some(c.clone()),
            _ => None,
        });
        pages.push(out);
        match next {
            Some(c) => cursor = c,
            None => return pages,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = pb::SnapshotInfo::decode(data) {
        let page = vec![pb::GetSnapshotResponse {
            item: Some(pb::get_snapshot_response::Item::Info(info)),
        }];
        std::hint::black_box(fdr_cli::ctl::render_fetched(
            vec![page],
            &pb::Incident::default(),
        ));
    }
    // `Store::get`: the stored format (interned, zstd) or the earlier one
    // (a plain `fdr.v1.Snapshot`).
    let Ok(snap) = fdr_agent::store::compact::decode(data) else {
        return;
    };
    // `fdrctl snapshot export --format csv|jsonl`.
    let _ = std::hint::black_box(export::csv(&snap));
    std::hint::black_box(export::jsonl(&snap));
    // `fdrctl snapshot show ID` / `incidents show N`: everything, 1000 a page.
    let all = get_snapshot(&snap, &[], "", 1000);
    // `snapshot show ID --kind K --grep TEXT`, with a small page: the kind
    // and text of the first event (as fdrctl would send them), so filters
    // match and paging runs.
    let first = snap.events.first();
    let kinds: Vec<i32> = first
        .map(|e| e.kind)
        .filter(|&k| fdr_agent::api::convert::kind_from_pb(k).is_some())
        .into_iter()
        .collect();
    let text: String = first
        .and_then(|e| e.process.as_ref())
        .map(|p| p.comm.chars().take(3).collect())
        .unwrap_or_default();
    let filtered = get_snapshot(&snap, &kinds, &text, 7);
    let incident = pb::Incident {
        serial: snap
            .events
            .iter()
            .find_map(|e| match &e.detail {
                Some(pb::event::Detail::Audit(a)) => Some(a.incident),
                _ => None,
            })
            .unwrap_or(1),
        snapshot_id: snap.info.as_ref().map_or(1, |i| i.id),
        audits: snap
            .events
            .iter()
            .filter_map(|e| match &e.detail {
                Some(pb::event::Detail::Audit(a)) => Some(pb::Audit {
                    event_seq: e.seq,
                    time: e.time,
                    section: a.section.clone(),
                    rule: a.rule.clone(),
                    severity: a.severity,
                    message: a.message.clone(),
                    item: a.item.clone(),
                    process: e.process.clone(),
                    ancestry: e.ancestry.clone(),
                }),
                _ => None,
            })
            .take(4)
            .collect(),
        ..Default::default()
    };
    std::hint::black_box(fdr_cli::ctl::render_fetched(all, &incident));
    std::hint::black_box(fdr_cli::ctl::render_fetched(filtered, &incident));
});
