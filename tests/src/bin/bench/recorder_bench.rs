//! Recorder benchmarks without the kernel: ingest rate, bytes per buffered
//! event, freezing and committing a 10 000-event window.

use std::{sync::Arc, time::Instant};

use anyhow::Result;
use fdr_agent::{
    attribution::scope::Scope,
    event::{Detail, Event, EventKind, FileDetail, Record, Task},
    process::table::ProcessTable,
    recorder::{
        snapshot::{Snapshots, Window},
        Limits, ScopeBuffers,
    },
    store::{Retention, Store},
};
use serde_json::{json, Value};

/// A realistic mix: exec, exit, file writes, by a few processes in a few scopes.
pub fn events(n: usize) -> Vec<Arc<Event>> {
    let scopes: Vec<Scope> = std::iter::once(Scope::Host)
        .chain((0..7).map(|i| Scope::Container(format!("{i:0>64x}").into())))
        .collect();
    let image = fdr_agent::event::lineage::Image::root(
        4242,
        0,
        Arc::from("/usr/bin/python3"),
        Arc::from(vec![
            "python3".to_string(),
            "app.py".into(),
            "--port".into(),
            "8080".into(),
        ]),
    );
    (0..n)
        .map(|i| {
            let detail = match i % 3 {
                0 => Detail::Exec {
                    filename: "/usr/bin/curl".into(),
                    exe: "/usr/bin/curl".into(),
                    exe_incomplete: false,
                    exe_dev: 1,
                    exe_ino: 2,
                    argv: vec!["curl".into(), "-s".into(), "http://10.0.0.1/health".into()],
                    old_tid: 0,
                    argv_truncated: false,
                    argv_unreadable: false,
                    filename_truncated: false,
                    stdin_socket: false,
                    not_utf8: fdr_agent::event::NotUtf8::NONE,
                },
                1 => Detail::Exit { status: 0 },
                _ => Detail::File {
                    kind: EventKind::FileWrite,
                    file: Box::new(FileDetail {
                        path: format!("/var/log/app/worker-{}.log", i % 16),
                        flags: 1,
                        mode: 0o100644,
                        syscall: "openat",
                        ..FileDetail::default()
                    }),
                },
            };
            Arc::new(Event {
                seq: i as u64 + 1,
                time_ns: 1_700_000_000_000_000_000 + i as u64 * 1000,
                record: Record {
                    boot_ns: i as u64 * 1000,
                    cpu: 0,
                    task: Task {
                        pid: 1000 + (i % 50) as u32,
                        tid: 1000 + (i % 50) as u32,
                        ppid: 1,
                        uid: 0,
                        gid: 0,
                        loginuid: None,
                        cgroup_id: 10 + (i % 8) as u64,
                        start_ns: 0,
                        comm: "python3".into(),
                        has_tty: false,
                    },
                    detail,
                },
                image: image.clone(),
                scope: scopes[i % scopes.len()].clone(),
                unit: None,
            })
        })
        .collect()
}

pub fn run() -> Result<Value> {
    // Ingest: every event into its scope's buffer, one core.
    let evs = events(1_000_000);
    let mut buffers = ScopeBuffers::new(Limits {
        scope_quota: 64 << 20,
        critical_reserve: 0,
        budget: 1 << 30,
        grace_ns: u64::MAX,
    });
    let t = Instant::now();
    for e in &evs {
        buffers.push(e.clone());
    }
    let ingest = evs.len() as f64 / t.elapsed().as_secs_f64();
    let st = buffers.stats();
    let bytes_per_event = st.bytes as f64 / st.events as f64;

    // Freeze and commit a 10 000-event window of one scope.
    let dir = std::env::temp_dir().join(format!("fdr-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(
        &dir,
        Retention {
            max_snapshots: 100,
            max_bytes: 1 << 30,
        },
    )?;
    let mut snaps = Snapshots::new(
        std::sync::Arc::new(store),
        Window {
            before_ns: u64::MAX / 4,
            after_ns: 0,
        },
    );
    let mut one = ScopeBuffers::new(Limits {
        scope_quota: 1 << 30,
        critical_reserve: 0,
        budget: 1 << 30,
        grace_ns: u64::MAX,
    });
    for e in evs.iter().filter(|e| e.scope == Scope::Host).take(10_000) {
        one.push(e.clone());
    }
    let at = evs.last().map_or(0, |e| e.time_ns);
    let t = Instant::now();
    let info = snaps.freeze(Scope::Host, "bench", at, &one, 0)?;
    let freeze_ms = t.elapsed().as_secs_f64() * 1e3;
    let procs = ProcessTable::default();
    let t = Instant::now();
    let ids = snaps.close(at + 1, &procs, &fdr_agent::event::wire::Enrich::BARE, false)?;
    // Committed on the committer thread: the figure is close + write.
    snaps.committer().drain(std::time::Duration::from_secs(60));
    let commit_ms = t.elapsed().as_secs_f64() * 1e3;
    let stored = snaps.store().list()?;
    anyhow::ensure!(
        ids == [info.id] && info.event_count == 10_000,
        "snapshot of 10 000 events"
    );
    let full = full_store(snaps.store(), info.id)?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("recorder: ingest {:.2} M events/s, {:.0} bytes/event, freeze 10k {:.2} ms, commit 10k {:.1} ms ({} bytes on disk)",
        ingest / 1e6, bytes_per_event, freeze_ms, commit_ms, stored[0].bytes);
    println!(
        "recorder: store at retention (100 x 10k events): list {:.2} ms, put with eviction {:.1} ms",
        full.list_ms, full.put_ms
    );
    Ok(json!({
        "case": "recorder",
        "ingest_events_per_s": ingest,
        "bytes_per_buffered_event": bytes_per_event,
        "freeze_10k_ms": freeze_ms,
        "commit_10k_ms": commit_ms,
        "snapshot_10k_bytes_on_disk": stored[0].bytes,
        "list_100_snapshots_ms": full.list_ms,
        "put_at_retention_ms": full.put_ms,
    }))
}

struct FullStore {
    list_ms: f64,
    put_ms: f64,
}

/// Fills the store to its retention limit with copies of snapshot `id`,
/// then times a listing and one more commit (which evicts the oldest).
fn full_store(store: &Store, id: u64) -> Result<FullStore> {
    let snap = store
        .get(id)?
        .ok_or_else(|| anyhow::anyhow!("snapshot {id} stored"))?;
    for _ in 0..99 {
        let mut s = snap.clone();
        if let Some(i) = s.info.as_mut() {
            i.id = store.next_id()?;
        }
        store.put(&s)?;
    }
    let t = Instant::now();
    let n = store.list()?.len();
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(n == 100, "100 snapshots listed, not {n}");
    let mut s = snap;
    if let Some(i) = s.info.as_mut() {
        i.id = store.next_id()?;
    }
    let t = Instant::now();
    let evicted = store.put(&s)?;
    let put_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(evicted.len() == 1, "one evicted at retention");
    Ok(FullStore { list_ms, put_ms })
}
