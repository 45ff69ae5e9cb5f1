//! The timeline's data (`/api/timeline/{kind}/{id}/…`) and forensic
//! packages. A timeline's source is decoded once (snapshot object checked
//! against its hash, rows rendered) and kept in a cache bounded by bytes,
//! least recently used out, so paging and filtering a 100 000-event
//! snapshot costs a scan of its rows, not a decode.

use std::{
    collections::HashMap,
    io::Write as _,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};
use fdr_proto::{
    render::{
        self,
        export::uid_only,
        timeline::{self, Marks, Timeline},
    },
    v1 as pb,
};
use tokio::sync::OnceCell;

use super::{auth::Principal, Web};
use crate::api::load_snapshot;

type Slot = Arc<OnceCell<Arc<Timeline>>>;

/// What an entry counts at least.
const ENTRY_OVERHEAD: u64 = 64 << 10;

struct Entry {
    slot: Slot,
    used: u64,
    bytes: u64,
}

/// Timelines by source, bounded by bytes.
pub struct Cache {
    cap: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    clock: u64,
    bytes: u64,
}

impl Cache {
    pub fn new(cap: u64) -> Cache {
        Cache {
            cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn slot(&self, key: &str) -> Slot {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.clock += 1;
        let now = g.clock;
        let e = g.map.entry(key.to_owned()).or_insert_with(|| Entry {
            slot: Arc::new(OnceCell::new()),
            used: now,
            bytes: 0,
        });
        e.used = now;
        e.slot.clone()
    }

    fn get(&self, key: &str) -> Option<Arc<Timeline>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.clock += 1;
        let now = g.clock;
        let e = g.map.get_mut(key)?;
        e.used = now;
        e.slot.get().cloned()
    }

    /// Counts a filled slot's bytes and evicts the least recently used
    /// until the cache fits (the newest stays, even alone over the cap).
    fn settle(&self, key: &str, bytes: u64) {
        // Every entry costs something, an empty one too.
        let bytes = bytes.max(ENTRY_OVERHEAD);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = g.map.get_mut(key) else { return };
        let old = std::mem::replace(&mut e.bytes, bytes);
        g.bytes = g.bytes + bytes - old;
        while g.bytes > self.cap && g.map.len() > 1 {
            let victim = g
                .map
                .iter()
                .filter(|(k, e)| k.as_str() != key && e.slot.initialized())
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            let Some(v) = victim else { break };
            if let Some(e) = g.map.remove(&v) {
                g.bytes -= e.bytes;
            }
        }
    }

    /// Keeps a timeline under `key` (a live query's).
    pub fn put(&self, key: &str, t: Arc<Timeline>) {
        let bytes = t.bytes() as u64;
        let slot = self.slot(key);
        let _ = slot.set(t);
        self.settle(key, bytes);
    }

    fn forget(&self, key: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.map.remove(key) {
            g.bytes -= e.bytes;
        }
    }
}

/// An error as an HTTP answer (text).
pub fn status_response(s: &tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, format!("{}\n", render::escape(s.message()))).into_response()
}

fn bad(msg: impl Into<String>) -> tonic::Status {
    tonic::Status::invalid_argument(msg.into())
}

/// The incident with every audit the console holds.
pub async fn incident(web: &Web, serial: u64) -> Result<pb::Incident, tonic::Status> {
    web.con
        .with_index(move |ix| ix.incident(serial))
        .await
        .map_err(crate::api::index_status)?
        .ok_or_else(|| tonic::Status::not_found(format!("no incident {serial} in the console")))
}

/// The timeline of a source: `snapshot/<id>`, `incident/<serial>` (its
/// snapshot, its events marked) or `live/<token>`.
pub async fn timeline(web: &Web, kind: &str, id: &str) -> Result<Arc<Timeline>, tonic::Status> {
    if kind == "live" {
        return web
            .cache
            .get(&format!("live/{id}"))
            .ok_or_else(|| tonic::Status::not_found("this live query has expired; run it again"));
    }
    let num: u64 = id
        .parse()
        .map_err(|_| bad(format!("{}: not a number", render::escape(id))))?;
    // By the number, so that `01` and `1` are one entry.
    let key = format!("{kind}/{num}");
    if let Some(t) = web.cache.get(&key) {
        return Ok(t);
    }
    let (snap_id, marks) = match kind {
        "snapshot" => (num, None),
        "incident" => {
            let inc = incident(web, num).await?;
            if inc.snapshot_id == 0 {
                return Err(tonic::Status::not_found(format!(
                    "incident {num} has no snapshot in the console"
                )));
            }
            (inc.snapshot_id, Some(Marks::of(&inc)))
        }
        _ => return Err(tonic::Status::not_found("no such timeline")),
    };
    let slot = web.cache.slot(&key);
    let con = web.con.clone();
    let r = slot
        .get_or_try_init(|| async move {
            let _heavy = web
                .heavy
                .acquire()
                .await
                .map_err(|_| tonic::Status::unavailable("shutting down"))?;
            let (snap, _) = load_snapshot(&con, snap_id).await?;
            let marks = marks.unwrap_or_default();
            tokio::task::spawn_blocking(move || {
                Arc::new(Timeline::from_snapshot(snap, &marks, &uid_only()))
            })
            .await
            .map_err(|e| tonic::Status::internal(format!("timeline: {e}")))
        })
        .await
        .cloned();
    match r {
        Ok(t) => {
            web.cache.settle(&key, t.bytes() as u64);
            Ok(t)
        }
        Err(e) => {
            web.cache.forget(&key);
            Err(e)
        }
    }
}

fn json_response(v: &serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_default(),
    )
        .into_response()
}

pub async fn query(
    State(web): State<Arc<Web>>,
    Path((kind, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let q = match timeline::Query::parse(&params) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match timeline(&web, &kind, &id).await {
        Ok(t) => match tokio::task::spawn_blocking(move || t.query(&q)).await {
            Ok(v) => json_response(&v),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("query: {e}\n")).into_response(),
        },
        Err(s) => status_response(&s),
    }
}

pub async fn event(
    State(web): State<Arc<Web>>,
    Path((kind, id, i)): Path<(String, String, usize)>,
) -> Response {
    match timeline(&web, &kind, &id).await {
        Ok(t) => match t.detail(i) {
            Some(v) => json_response(&v),
            None => (StatusCode::NOT_FOUND, "no such event\n").into_response(),
        },
        Err(s) => status_response(&s),
    }
}

/// The forensic package: `events.csv` (as `fdrctl snapshot export
/// --format csv` writes it), `events.jsonl`, `snapshot.pb` (the evidence
/// exactly as the agent sealed it: its SHA-256 is the seal's), and
/// `manifest.json` (the evidence's SHA-256, the agent's seal with its
/// public key and signature and what the console's check found, where and
/// when it is from, each file's SHA-256): checkable without fdr.
pub fn package_zip(snap: &pb::Snapshot, sealed: &[u8]) -> Result<Vec<u8>, String> {
    use zip::{write::SimpleFileOptions, CompressionMethod, ZipWriter};
    let info = snap.info.clone().unwrap_or_default();
    let csv = render::export::csv(snap, &uid_only()).map_err(|e| format!("CSV: {e}"))?;
    let jsonl = render::export::jsonl(snap);
    let sha = |b: &[u8]| crate::evidence::sha256_hex(b);
    let t = |ts: &Option<prost_types::Timestamp>| render::time_text(ts.as_ref());
    let manifest = serde_json::json!({
        "format": "fdr forensic package 1",
        "generator": format!("fdr-console {}", env!("CARGO_PKG_VERSION")),
        "snapshot": {
            "id": info.id,
            "sha256": info.sha256,
            "node": info.node,
            "host": info.host,
            "agent_instance": info.agent_instance,
            "agent_snapshot_id": info.agent_snapshot_id,
            "verification": info.verification,
            "seal": info.seal.as_ref().map(|s| serde_json::json!({
                "agent_snapshot_id": s.id, "sha256": s.sha256,
                "prev_agent_snapshot_id": s.prev_id, "prev_sha256": s.prev_sha256,
                "sealed_at": t(&s.sealed_at),
                "ed25519_public_key": fdr_proto::integrity::hex(&s.public_key),
                "ed25519_signature": fdr_proto::integrity::hex(&s.signature),
                "signed_text": String::from_utf8_lossy(&fdr_proto::integrity::seal_text(&info.agent_instance, s)),
            })),
            "scope": info.scope,
            "container": info.container.as_ref().map(render::container_json),
            "reason": info.reason,
            "taken": t(&info.at),
            "window_start": t(&info.window_start),
            "window_end": t(&info.window_end),
            "events": snap.events.len(),
            "completeness": info.completeness,
            "incidents": info.incidents,
            "gaps": snap.gaps.iter().map(|g| serde_json::json!({
                "from": t(&g.from), "to": t(&g.to), "lost": g.lost, "cause": g.cause,
                "kind": if g.kind == 0 { String::new() } else { render::kind_name(g.kind) },
                "host_wide": g.host_wide,
            })).collect::<Vec<_>>(),
        },
        "files": {
            "events.csv": {"sha256": sha(&csv), "bytes": csv.len()},
            "events.jsonl": {"sha256": sha(&jsonl), "bytes": jsonl.len()},
            "snapshot.pb": {"sha256": sha(sealed), "bytes": sealed.len(),
                "format": "fdr.v1.Snapshot (protobuf), the sealed encoding"},
        },
        "times": "UTC",
    });
    let manifest = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    let mut z = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .large_file(csv.len().max(jsonl.len()) as u64 >= u32::MAX as u64);
    for (name, data) in [
        ("manifest.json", &manifest),
        ("events.csv", &csv),
        ("events.jsonl", &jsonl),
        ("snapshot.pb", &sealed.to_vec()),
    ] {
        z.start_file(name, opts).map_err(|e| format!("zip: {e}"))?;
        z.write_all(data).map_err(|e| format!("zip: {e}"))?;
    }
    let out = z.finish().map_err(|e| format!("zip: {e}"))?;
    Ok(out.into_inner())
}

pub async fn package(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    conn: Option<Extension<super::Conn>>,
    Path(id): Path<u64>,
) -> Response {
    let Ok(_heavy) = web.heavy.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let (snap, sealed) = match load_snapshot(&web.con, id).await {
        Ok(s) => s,
        Err(s) => return status_response(&s),
    };
    tracing::info!(snapshot = id, role = p.role.name(), peer = %conn.map(|c| c.0.peer.to_string()).unwrap_or_default(), "web: forensic package downloaded");
    match tokio::task::spawn_blocking(move || package_zip(&snap, &sealed)).await {
        Ok(Ok(zip)) => (
            [
                (header::CONTENT_TYPE, "application/zip".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"fdr-snapshot-{id}.zip\""),
                ),
            ],
            zip,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("package: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn the_package_holds_the_csv_export_and_a_manifest() {
        let snap = pb::Snapshot {
            info: Some(pb::SnapshotInfo {
                id: 4,
                sha256: "ab".repeat(32),
                node: "node-b".into(),
                ..Default::default()
            }),
            events: vec![pb::Event {
                kind: pb::EventKind::Exec as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let sealed = prost::Message::encode_to_vec(&snap);
        let zip = package_zip(&snap, &sealed).unwrap();
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        let mut csv = Vec::new();
        a.by_name("events.csv")
            .unwrap()
            .read_to_end(&mut csv)
            .unwrap();
        assert_eq!(csv, render::export::csv(&snap, &uid_only()).unwrap());
        let mut m = String::new();
        a.by_name("manifest.json")
            .unwrap()
            .read_to_string(&mut m)
            .unwrap();
        let m: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(m["snapshot"]["sha256"], "ab".repeat(32));
        assert_eq!(m["snapshot"]["node"], "node-b");
        assert!(a.by_name("events.jsonl").is_ok());
        let mut pb_bytes = Vec::new();
        a.by_name("snapshot.pb")
            .unwrap()
            .read_to_end(&mut pb_bytes)
            .unwrap();
        assert_eq!(pb_bytes, sealed, "the sealed encoding, byte for byte");
        assert_eq!(
            m["files"]["snapshot.pb"]["sha256"],
            crate::evidence::sha256_hex(&sealed)
        );
    }

    #[test]
    fn the_cache_keeps_to_its_bytes() {
        let c = Cache::new(1);
        let t = |n| {
            Arc::new(Timeline::from_events(
                (0..n).map(|_| pb::Event::default()).collect(),
                &uid_only(),
            ))
        };
        c.put("a", t(10));
        c.put("b", t(10));
        assert!(c.get("a").is_none(), "the older one is out");
        assert!(c.get("b").is_some(), "the newest stays, even over the cap");
    }
}
