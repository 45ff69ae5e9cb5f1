//! Storage that holds up: a full disk queues snapshots and commits them when
//! space returns (no restart), and ids are never reused after kill -9.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use fdr_cli::client;
use fdr_proto::v1 as pb;
use fdr_tests::{unique, AgentProcess, Capture, TempDir};

/// Generous: other engineers' builds and tests share the machine.
const LONG: Duration = Duration::from_secs(90);

/// A private tmpfs, unmounted (lazily) and removed on drop, also when the
/// test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(tag: &str, size: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xa5u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

async fn stats(c: &mut client::Client) -> pb::StorageStats {
    c.get_stats(pb::GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner()
        .storage
        .expect("storage stats")
}

/// Polls `f` (async) until it gives a value, within [`LONG`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(c: &mut client::Client, reason: &str) -> Result<pb::SnapshotInfo, tonic::Status> {
    c.create_snapshot(pb::CreateSnapshotRequest {
        scope: "host".into(),
        reason: reason.into(),
    })
    .await
    .map(|r| r.into_inner())
}

/// Ids listed as committed (closed).
async fn committed(c: &mut client::Client) -> Vec<u64> {
    let l = c
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .expect("ListSnapshots")
        .into_inner()
        .snapshots;
    if std::env::var_os("FDR_DEBUG_STORAGE").is_some() {
        let st = stats(c).await;
        eprintln!(
            "DEBUG {:?} {:?}",
            l.iter().map(|i| (i.id, i.open)).collect::<Vec<_>>(),
            st
        );
    }
    l.into_iter().filter(|i| !i.open).map(|i| i.id).collect()
}

fn run_some_processes(tag: &str) {
    for i in 0..5 {
        let _ = Command::new("/bin/sh")
            .args(["-c", &format!("echo {tag}-{i} > /dev/null")])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_queues_snapshots_and_commits_them_when_space_returns() {
    let fs = Tmpfs::mount("storage-enospc", "128m");
    let data = fs.0.join("data");
    let cap = Capture::start_with("storage-enospc", |c| {
        c.recorder.data_dir = data.clone();
        c.recorder.snapshot_before = Duration::from_secs(1);
        c.recorder.snapshot_after = Duration::from_millis(300);
        c.attribution.runtime_endpoints.clear();
    })
    .await;
    let mut c = client::connect_unix(&cap.socket()).await.expect("connect");
    let tag = unique("enospc");

    // Before: a snapshot commits normally.
    run_some_processes(&tag);
    let first = create(&mut c, "before the disk filled")
        .await
        .expect("create")
        .id;
    eventually("the first snapshot committed", || {
        let mut c = c.clone();
        async move { committed(&mut c).await.contains(&first).then_some(()) }
    })
    .await;
    assert_eq!(stats(&mut c).await.state, "ok");

    // The disk fills: snapshots are either kept (an id) or refused (an
    // error), never an id that vanishes.
    let filler = fs.0.join("filler");
    fill(&filler);
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for i in 0..8 {
        run_some_processes(&tag);
        match create(&mut c, &format!("while full {i}")).await {
            Ok(info) => kept.push(info.id),
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                    ),
                    "{status:?}"
                );
                refused.push(status.message().to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!kept.is_empty(), "refused every snapshot: {refused:?}");
    let failing = eventually("storage reported failing", || {
        let mut c = c.clone();
        async move {
            let s = stats(&mut c).await;
            (s.state == "failing").then_some(s)
        }
    })
    .await;
    assert!(failing.failures >= 1, "{failing:?}");
    assert!(!failing.last_error.is_empty(), "{failing:?}");
    // A queued snapshot is pending, not "not found".
    eventually("a snapshot waiting for the disk", || {
        let mut c = c.clone();
        async move { (stats(&mut c).await.pending_commits > 0).then_some(()) }
    })
    .await;
    let last = *kept.last().unwrap();
    let listed = committed(&mut c).await;
    assert!(!listed.contains(&last), "committed on a full disk?");
    let err = c
        .get_snapshot(pb::GetSnapshotRequest {
            id: last,
            ..Default::default()
        })
        .await
        .expect_err("not readable yet");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // Space returns: everything kept is committed, in place, no restart.
    std::fs::remove_file(&filler).expect("free the space");
    let after = create(&mut c, "after the space returned")
        .await
        .expect("create")
        .id;
    kept.push(after);
    let want = kept.clone();
    eventually("every kept snapshot committed", || {
        let mut c = c.clone();
        let want = want.clone();
        async move {
            let have = committed(&mut c).await;
            want.iter().all(|id| have.contains(id)).then_some(())
        }
    })
    .await;
    for &id in &kept {
        let mut s = c
            .get_snapshot(pb::GetSnapshotRequest {
                id,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("snapshot {id}: {e:?}"))
            .into_inner();
        let first = s.message().await.expect("stream").expect("info");
        assert!(
            matches!(first.item, Some(pb::get_snapshot_response::Item::Info(ref i)) if i.id == id)
        );
    }
    let ok = eventually("storage ok again with nothing pending", || {
        let mut c = c.clone();
        async move {
            let s = stats(&mut c).await;
            (s.state == "ok" && s.pending_commits == 0).then_some(s)
        }
    })
    .await;
    assert!(ok.reopens >= 1, "{ok:?}");
    assert!(ok.failures >= failing.failures, "{ok:?}");
    let all = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner();
    eprintln!(
        "kept {} snapshots, refused {}; longest pipeline step {} µs; storage: {ok:?}",
        kept.len(),
        refused.len(),
        all.pipeline_max_step_us
    );

    // Models and incidents are written again: what the agent learned is
    // in the database after a clean stop.
    run_some_processes(&tag);
    tokio::time::sleep(Duration::from_millis(1500)).await; // one flush
    cap.stop().await;
    let store = fdr_agent::store::Store::open(
        &data,
        fdr_agent::store::Retention {
            max_snapshots: 1000,
            max_bytes: u64::MAX,
        },
    )
    .expect("reopen after stop");
    let models = fdr_agent::analysis::persist::models::load(&store).expect("models");
    assert!(!models.is_empty(), "models persisted after the recovery");
    let stored: Vec<u64> = store.list().unwrap().iter().map(|i| i.id).collect();
    for id in &kept {
        assert!(stored.contains(id), "snapshot {id} lost: {stored:?}");
    }
    drop(store);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_ids_are_not_reused_and_the_open_snapshot_says_why_it_is_empty() {
    let dir = TempDir::new("storage-crash");
    let socket = dir.path().join("fdr.sock");
    let config = dir.path().join("fdr.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\ndata_dir = \"{}\"\nsnapshot_after = \"60s\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let args = ["--config".as_ref(), config.as_os_str()];
    let mut agent = AgentProcess::start(&socket, &args);
    let mut c = client::connect_unix(&socket).await.expect("connect");
    run_some_processes("crash");
    let open = create(&mut c, "open when killed").await.expect("create");
    assert!(open.open);
    // The snapshot's open mark is written by the committer (milliseconds).
    eventually("the committer idle", || {
        let mut c = c.clone();
        async move { (stats(&mut c).await.pending_commits == 0).then_some(()) }
    })
    .await;
    agent.0.kill().expect("kill -9");
    let _ = agent.0.wait();
    drop(agent);

    let _agent = AgentProcess::start(&socket, &args);
    let mut c = client::connect_unix(&socket).await.expect("connect again");
    let new = create(&mut c, "after the restart").await.expect("create");
    assert!(
        new.id > open.id,
        "a new id, never handed out before: {} after {}",
        new.id,
        open.id
    );
    // The killed agent's open snapshot: stored as incomplete, with why.
    let mut s = c
        .get_snapshot(pb::GetSnapshotRequest {
            id: open.id,
            ..Default::default()
        })
        .await
        .expect("the old id answers")
        .into_inner();
    let mut info = None;
    let mut gaps = Vec::new();
    let mut events = 0;
    while let Some(m) = s.message().await.expect("stream") {
        match m.item {
            Some(pb::get_snapshot_response::Item::Info(i)) => info = Some(i),
            Some(pb::get_snapshot_response::Item::Gap(g)) => gaps.push(g),
            Some(pb::get_snapshot_response::Item::Event(_)) => events += 1,
            _ => {}
        }
    }
    let info = info.expect("info");
    assert_eq!(info.id, open.id);
    assert_eq!(
        info.reason, "open when killed",
        "its own summary, not the new one's"
    );
    assert!(!info.open);
    assert_eq!(events, 0, "never the new snapshot's events");
    assert!(info.completeness < 1.0);
    assert!(
        gaps.iter().any(|g| g.cause.contains("agent stopped")),
        "{gaps:?}"
    );
}
