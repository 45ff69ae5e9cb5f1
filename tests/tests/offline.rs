//! `fdr-agent --offline`: a database left by an agent that no longer runs
//! (a dead node's data directory) is served as that agent served it —
//! incidents, snapshots, exports, identity — by an unprivileged process
//! that loads no probe; what needs capture is refused.

use std::{path::Path, process::Command, time::Duration};

use fdr_agent::config::{RuleAction, RuleConfig};
use fdr_proto::v1 as pb;
use fdr_tests::{agent_binary, poll_until, unique, Capture, Cgroup, TempDir};

/// Running a program named `name` opens a `suspicious-binary` incident.
fn rule(name: &str) -> RuleConfig {
    RuleConfig {
        name: format!("test-{name}"),
        action: RuleAction::Deny,
        model: "*".into(),
        section: Some("exec".into()),
        items: vec![format!("* -> */{name}")],
        interactive: None,
        severity: Some("high".into()),
        incident: Some("suspicious-binary".into()),
        message: None,
    }
}

/// What the API says about `scope` and `snapshot_id`, to compare.
#[derive(Debug, PartialEq)]
struct Answers {
    incidents: Vec<pb::Incident>,
    snapshot: Vec<pb::GetSnapshotResponse>,
    csv: Vec<u8>,
    identity: (String, String),
}

async fn answers(socket: &Path, scope: &str, snapshot_id: u64) -> Answers {
    let mut c = fdr_cli::client::connect_unix(socket)
        .await
        .expect("connect");
    let mut incidents: Vec<pb::Incident> = c
        .list_incidents(pb::ListIncidentsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("ListIncidents")
        .into_inner()
        .incidents
        .into_iter()
        .filter(|i| i.scope == scope)
        .collect();
    incidents.sort_by_key(|i| i.serial);
    let mut stream = c
        .get_snapshot(pb::GetSnapshotRequest {
            id: snapshot_id,
            ..Default::default()
        })
        .await
        .expect("GetSnapshot")
        .into_inner();
    let mut snapshot = Vec::new();
    while let Some(page) = stream.message().await.expect("a snapshot page") {
        snapshot.push(page);
    }
    let mut stream = c
        .export_snapshot(pb::ExportSnapshotRequest {
            id: snapshot_id,
            format: "csv".into(),
        })
        .await
        .expect("ExportSnapshot")
        .into_inner();
    let mut csv = Vec::new();
    while let Some(chunk) = stream.message().await.expect("an export chunk") {
        csv.extend_from_slice(&chunk.data);
    }
    let id = c
        .get_identity(pb::GetIdentityRequest {})
        .await
        .expect("GetIdentity")
        .into_inner();
    Answers {
        incidents,
        snapshot,
        csv,
        identity: (id.instance_id, id.node),
    }
}

/// `path` and everything under it owned by `uid`.
fn chown_all(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).expect("read dir") {
            chown_all(&e.expect("dir entry").path(), uid);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agents_database_is_served_offline_as_it_was() {
    let work = TempDir::new("offline-work");
    let data = work.path().join("data");
    // Letters only: items are generalised (digits become `#`).
    let tag: String = std::process::id()
        .to_string()
        .bytes()
        .map(|d| char::from(b'a' + (d - b'0')))
        .collect();
    let name = format!("fdr-offline-{tag}");
    let node = format!("dead-node-{tag}");
    let (data_dir, node_name) = (data.clone(), node.clone());
    let cap = Capture::start_with("offline", move |c| {
        c.recorder.data_dir = data_dir;
        c.host.node_name = node_name;
        c.recorder.snapshot_after = Duration::from_secs(1);
        c.attribution.runtime_endpoints.clear();
        c.analysis.rules.insert(0, rule(&name));
    })
    .await;
    let name = format!("fdr-offline-{tag}");
    // A container scope of its own, so that no other incident mixes in.
    let id = format!("{:0>64x}", std::process::id() as u64 * 7_919);
    let cg = Cgroup::create(&format!(
        "{}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        unique("k8s"),
        unique("uid").replace('-', "_")
    ));
    let scope = format!("container:{id}");
    std::fs::copy("/bin/true", work.path().join(&name)).expect("copy /bin/true");
    let script = format!(
        "echo $$ > {} && {}",
        cg.procs_file().display(),
        work.path().join(&name).display()
    );
    let st = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .expect("run the shell");
    assert!(st.success());

    // The incident, and its snapshot committed.
    let socket = cap.socket();
    let state = cap.agent.as_ref().expect("running").state.clone();
    let start = std::time::Instant::now();
    let snapshot_id = loop {
        let mut c = fdr_cli::client::connect_unix(&socket)
            .await
            .expect("connect");
        let found = c
            .list_incidents(pb::ListIncidentsRequest {
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("ListIncidents")
            .into_inner()
            .incidents
            .into_iter()
            .find(|i| i.scope == scope && i.snapshot_id > 0);
        if let Some(i) = found {
            if state.store.get(i.snapshot_id).expect("read").is_some() {
                break i.snapshot_id;
            }
        }
        assert!(
            start.elapsed() < fdr_tests::DEADLINE * 3,
            "an incident of {scope} with its snapshot committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let before = answers(&socket, &scope, snapshot_id).await;
    assert!(!before.incidents.is_empty());
    assert!(
        before.csv.len() > 100,
        "{}",
        String::from_utf8_lossy(&before.csv)
    );
    assert_eq!(before.identity.1, node);
    drop(state);
    drop(cg);
    cap.stop().await;

    // Offline, as nobody, on another socket, with another node name
    // configured (the database's wins).
    let run = work.path().join("run");
    std::fs::create_dir_all(&run).expect("socket dir");
    let nobody = 65534;
    chown_all(&data, nobody);
    chown_all(&run, nobody);
    let offline_socket = run.join("offline.sock");
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(agent_binary())
            .arg("--offline")
            .arg("--data-dir")
            .arg(&data)
            .arg("--socket")
            .arg(&offline_socket)
            .args(["--node-name", "not-the-stored-one"])
            .env_remove("HOST_ROOT")
            .env_remove("FDR_CONFIG")
            .uid(nobody)
            .gid(nobody)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start fdr-agent --offline")
    };
    poll_until("the offline agent's socket", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("fdr-agent --offline exited: {st}");
        }
        offline_socket.exists().then_some(())
    });
    let after = answers(&offline_socket, &scope, snapshot_id).await;
    assert_eq!(after, before, "served offline as it was");

    // Capture is refused; the rest answers.
    let mut c = fdr_cli::client::connect_unix(&offline_socket)
        .await
        .expect("connect");
    let err = c
        .create_snapshot(pb::CreateSnapshotRequest {
            scope: "host".into(),
            ..Default::default()
        })
        .await
        .expect_err("no capture offline");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("offline"), "{}", err.message());
    let err = c
        .relearn_model(pb::RelearnModelRequest::default())
        .await
        .expect_err("no relearning offline");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let stats = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner();
    assert_eq!(stats.buffers.unwrap_or_default().events, 0);
    let listed = c
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .expect("ListSnapshots")
        .into_inner()
        .snapshots;
    assert!(listed.iter().any(|s| s.id == snapshot_id && !s.open));

    // fdrctl: the identity, the raw snapshot, and `agents` (a console's
    // call) refused by an agent.
    let fdrctl = |args: &[&str]| {
        Command::new(fdr_tests::fdrctl_binary())
            .arg("--socket")
            .arg(&offline_socket)
            .args(args)
            .output()
            .expect("run fdrctl")
    };
    let out = fdrctl(&["identity", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(id["instance_id"], before.identity.0.as_str());
    assert_eq!(id["node"], node.as_str());
    let raw = work.path().join("snapshot.pb");
    let out = fdrctl(&[
        "snapshot",
        "export",
        &snapshot_id.to_string(),
        "--format",
        "protobuf",
        "--output",
        raw.to_str().expect("UTF-8 path"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let snap: pb::Snapshot =
        prost::Message::decode(std::fs::read(&raw).expect("read export").as_slice())
            .expect("a fdr.v1.Snapshot");
    assert_eq!(snap.info.as_ref().map(|i| i.id), Some(snapshot_id));
    let events = before
        .snapshot
        .iter()
        .filter(|p| matches!(p.item, Some(pb::get_snapshot_response::Item::Event(_))))
        .count();
    assert_eq!(snap.events.len(), events);
    assert!(
        snap.users.iter().any(|u| u.uid == 0 && u.name == "root"),
        "the snapshot names its users: {:?}",
        snap.users
    );
    let out = fdrctl(&["agents"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("console"), "{err}");

    // SIGTERM: a clean stop, the socket removed.
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().expect("wait");
    assert!(st.success(), "{st}");
    assert!(!offline_socket.exists());
}
