//! The recorder: snapshots that survive kill -9, windows that fill after
//! the freeze, per-scope quotas, exports a spreadsheet can read.

use std::{path::Path, process::Command, time::Duration};

use fdr_agent::{attribution::scope::Scope, event::Detail};
use fdr_cli::client;
use fdr_proto::v1 as pb;
use fdr_tests::{poll_until, unique, AgentProcess, Capture, Cgroup, TempDir, DEADLINE};

fn start_agent(config: &Path, socket: &Path) -> AgentProcess {
    AgentProcess::start(socket, &["--config".as_ref(), config.as_os_str()])
}

async fn export(c: &mut client::Client, id: u64, format: &str) -> Vec<u8> {
    let mut s = c
        .export_snapshot(pb::ExportSnapshotRequest {
            id,
            format: format.into(),
        })
        .await
        .expect("export")
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await.expect("chunk") {
        out.extend_from_slice(&chunk.data);
    }
    out
}

async fn wait_closed(c: &mut client::Client, id: u64) -> pb::SnapshotInfo {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let list = c
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if let Some(i) = list.snapshots.into_iter().find(|i| i.id == id && !i.open) {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot {id} never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_snapshot_survives_kill_9_byte_for_byte() {
    let dir = TempDir::new("persist");
    let config = dir.path().join("fdr.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\ndata_dir = \"{}\"\nsnapshot_after = \"500ms\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let socket = dir.path().join("fdr.sock");
    let mut agent = start_agent(&config, &socket);
    let mut c = client::connect_unix(&socket).await.expect("connect");
    let marker = unique("persist");
    let mut child = Command::new("/bin/sh")
        .args(["-c", "exit 3", &marker])
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    // The event is in the host buffer before we freeze.
    poll_until("marker recorded", || {
        let rt = tokio::runtime::Handle::current();
        let found = tokio::task::block_in_place(|| {
            rt.block_on(async {
                let q = pb::QueryEventsRequest {
                    scope: "host".into(),
                    text: marker.clone(),
                    ..Default::default()
                };
                c.query_events(q)
                    .await
                    .map(|r| !r.into_inner().events.is_empty())
                    .unwrap_or(false)
            })
        });
        found.then_some(())
    });
    let info = c
        .create_snapshot(pb::CreateSnapshotRequest {
            scope: "host".into(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.open);
    assert_eq!(info.scope, "host");
    let closed = wait_closed(&mut c, info.id).await;
    assert!(
        closed.event_count >= 3,
        "fork, exec and exit of the marker at least"
    );
    let csv_before = export(&mut c, info.id, "csv").await;
    let jsonl_before = export(&mut c, info.id, "jsonl").await;

    // kill -9, restart on the same data directory.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGKILL) };
    agent.0.wait().unwrap();
    let _agent2 = start_agent(&config, &socket);
    let mut c = client::connect_unix(&socket).await.expect("reconnect");
    let list = c
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let again = list
        .snapshots
        .iter()
        .find(|i| i.id == info.id)
        .expect("snapshot still there");
    assert_eq!(again.event_count, closed.event_count);
    assert_eq!(
        export(&mut c, info.id, "csv").await,
        csv_before,
        "byte for byte"
    );
    assert_eq!(export(&mut c, info.id, "jsonl").await, jsonl_before);

    // The CSV reads back with the spreadsheet columns.
    let mut rdr = csv::Reader::from_reader(csv_before.as_slice());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, fdr_proto::render::export::CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    let exec = rows
        .iter()
        .find(|r| &r[9] == "exec" && r[10].contains(&marker))
        .expect("the marker's exec row");
    assert_eq!(&exec[6], pid.to_string().as_str());
    assert_eq!(&exec[7], std::process::id().to_string().as_str());
    assert_eq!(&exec[8], "root");
    assert_eq!(&exec[2], "", "a host event");
    assert!(rows.iter().any(|r| &r[9] == "exit"
        && &r[6] == pid.to_string().as_str()
        && r[12].contains("exit code 3")));
    // JSON Lines parse, one event per line.
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&jsonl_before)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len() as u64, closed.event_count);
    assert!(lines
        .iter()
        .any(|v| v["kind"] == "exec" && v["process"]["pid"] == pid));

    // Bad input: clear statuses.
    let e = c
        .get_snapshot(pb::GetSnapshotRequest {
            id: 999_999,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .get_snapshot(pb::GetSnapshotRequest {
            id: info.id,
            cursor: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c
        .export_snapshot(pb::ExportSnapshotRequest {
            id: info.id,
            format: "xls".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c
        .create_snapshot(pb::CreateSnapshotRequest {
            scope: "pod".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_keeps_the_lead_up_and_fills_the_after_window() {
    let mut cap = Capture::start_with("window", |cfg| {
        cfg.recorder.snapshot_after = Duration::from_millis(1500);
    })
    .await;
    let before = unique("before");
    assert!(Command::new("/bin/true")
        .arg(&before)
        .status()
        .unwrap()
        .success());
    cap.wait_for("the lead-up", |e| e.argv().last() == Some(&before))
        .await;
    let mut c = client::connect_unix(&cap.socket()).await.unwrap();
    let info = c
        .create_snapshot(pb::CreateSnapshotRequest {
            scope: "host".into(),
            reason: "window".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.open);
    let after = unique("after");
    assert!(Command::new("/bin/true")
        .arg(&after)
        .status()
        .unwrap()
        .success());
    // Still open: not readable yet.
    let e = c
        .get_snapshot(pb::GetSnapshotRequest {
            id: info.id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let closed = wait_closed(&mut c, info.id).await;
    assert!(
        closed.event_count > info.event_count,
        "the after-window filled"
    );
    let mut s = c
        .get_snapshot(pb::GetSnapshotRequest {
            id: info.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut execs = Vec::new();
    let mut processes = 0;
    let end = closed.window_end.unwrap();
    while let Some(m) = s.message().await.unwrap() {
        match m.item {
            Some(pb::get_snapshot_response::Item::Event(e)) => {
                let t = e.time.unwrap();
                assert!(
                    (t.seconds, t.nanos) <= (end.seconds, end.nanos),
                    "nothing after the window"
                );
                if let Some(pb::event::Detail::Exec(x)) = e.detail {
                    execs.push(x.argv.last().cloned().unwrap_or_default());
                }
            }
            Some(pb::get_snapshot_response::Item::Process(_)) => processes += 1,
            _ => {}
        }
    }
    let b = execs
        .iter()
        .position(|a| a == &before)
        .expect("lead-up in the snapshot");
    let a = execs
        .iter()
        .position(|a| a == &after)
        .expect("follow-up in the snapshot");
    assert!(b < a, "in order");
    assert!(processes > 0, "ancestry recorded");
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_container_cannot_evict_a_quiet_ones_history() {
    let cap = Capture::start_with("quota", |cfg| {
        cfg.recorder.scope_quota_bytes = 64 * 1024; // 4000 writes take ~160 KB as records
        cfg.recorder.budget_bytes = 4 << 20;
    })
    .await;
    let base = unique("quota");
    let quiet_id = format!("{:0>64x}", 0xa1u32);
    let noisy_id = format!("{:0>64x}", 0xb2u32);
    let quiet = Cgroup::create(&format!("{base}/docker/{quiet_id}"));
    let noisy = Cgroup::create(&format!("{base}/docker/{noisy_id}"));
    let marker = unique("quiet");
    let run_in = |cg: &Cgroup, script: &str| {
        let full = format!("echo $$ > {} && {script}", cg.procs_file().display());
        assert!(Command::new("/bin/sh")
            .args(["-c", &full])
            .status()
            .unwrap()
            .success());
    };
    run_in(&quiet, &format!("/bin/true {marker}"));
    let dir = TempDir::new("quota-files");
    run_in(
        &noisy,
        &format!(
            "cd {} && i=0; while [ $i -lt 4000 ]; do echo x > f$i; i=$((i+1)); done",
            dir.path().display()
        ),
    );
    let quiet_scope = Scope::Container(quiet_id.as_str().into());
    let noisy_scope = Scope::Container(noisy_id.as_str().into());
    let state = cap.agent.as_ref().unwrap().state.clone();
    poll_until("the flood recorded and evicted", || {
        let st = state.buffers.lock().unwrap().scope_stats(&noisy_scope)?;
        (st.evicted > 0).then_some(())
    });
    let (kept_quiet, noisy_stats) = {
        let b = state.buffers.lock().unwrap();
        let kept: Vec<_> = b
            .scope(&quiet_scope)
            .filter(|e| matches!(&e.record.detail, Detail::Exec { argv, .. } if argv.last() == Some(&marker)))
            .collect();
        (kept, b.scope_stats(&noisy_scope).unwrap())
    };
    assert_eq!(
        kept_quiet.len(),
        1,
        "the quiet container's exec is still there"
    );
    assert_eq!(kept_quiet[0].record.task.cgroup_id, quiet.id());
    assert!(
        noisy_stats.bytes <= 64 * 1024,
        "quota held: {noisy_stats:?}"
    );
    assert!(noisy_stats.evicted > 0, "evictions counted");
    let quiet_stats = state
        .buffers
        .lock()
        .unwrap()
        .scope_stats(&quiet_scope)
        .unwrap();
    assert_eq!(quiet_stats.evicted, 0);
    // And the API sees the same: per-scope stats, and queries by container.
    let mut c = client::connect_unix(&cap.socket()).await.unwrap();
    let stats = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let of = |id: &str| {
        stats
            .scopes
            .iter()
            .find(|s| s.scope == format!("container:{id}"))
            .and_then(|s| s.buffer)
            .expect("scope in stats")
    };
    assert!(of(&noisy_id).evicted > 0);
    assert_eq!(of(&quiet_id).evicted, 0);
    assert!(of(&quiet_id).events >= 1);
    let r = c
        .query_events(pb::QueryEventsRequest {
            scope: format!("container:{quiet_id}"),
            text: marker.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r
        .events
        .iter()
        .all(|e| e.container_id == quiet_id && e.scope == format!("container:{quiet_id}")));
    let execs: Vec<_> = r
        .events
        .iter()
        .filter(|e| matches!(&e.detail, Some(pb::event::Detail::Exec(x)) if x.argv.last() == Some(&marker)))
        .collect();
    assert_eq!(
        execs.len(),
        1,
        "the quiet exec, found by text in its container"
    );
    cap.stop().await;
    drop((quiet, noisy));
}
