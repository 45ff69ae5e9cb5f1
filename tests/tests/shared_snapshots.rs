//! Evidence shared: two incidents of one scope opened a moment apart (one
//! attack, two incident types) reference one snapshot, which lists both,
//! holds both triggers and is stored once — compactly (a few hundred bytes
//! per event at most, where plain messages took kilobytes).

use std::{process::Command, time::Duration};

use fdr_agent::config::{RuleAction, RuleConfig};
use fdr_proto::v1 as pb;
use fdr_tests::{unique, wait_until, Capture, Cgroup, TempDir};

/// A deny rule: running a program named `name` opens an incident of type
/// `incident`, learning or not.
fn rule(name: &str, incident: &str) -> RuleConfig {
    RuleConfig {
        name: format!("test-{name}"),
        action: RuleAction::Deny,
        model: "*".into(),
        section: Some("exec".into()),
        items: vec![format!("* -> */{name}")],
        interactive: None,
        severity: Some("high".into()),
        incident: Some(incident.into()),
        message: None,
    }
}

async fn list_incidents(socket: &std::path::Path) -> Vec<pb::Incident> {
    let mut c = fdr_cli::client::connect_unix(socket)
        .await
        .expect("connect");
    c.list_incidents(pb::ListIncidentsRequest {
        after_serial: 0,
        limit: 1000,
        ..Default::default()
    })
    .await
    .expect("ListIncidents")
    .into_inner()
    .incidents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_incidents_of_one_scope_within_a_window_share_one_snapshot() {
    let work = TempDir::new("shared-work");
    // Letters only: items are generalised (digits become `#`).
    let tag: String = std::process::id()
        .to_string()
        .bytes()
        .map(|d| char::from(b'a' + (d - b'0')))
        .collect();
    let one = format!("fdr-shared-one-{tag}");
    let two = format!("fdr-shared-two-{tag}");
    let rules = vec![rule(&one, "crypto-miner"), rule(&two, "suspicious-binary")];
    let cap = Capture::start_with("shared", |c| {
        c.recorder.snapshot_after = Duration::from_secs(2);
        c.attribution.runtime_endpoints.clear();
        c.analysis.rules.splice(0..0, rules);
    })
    .await;
    // A container scope of its own (kubepods-shaped cgroup), so that no
    // other test's incidents mix in.
    let id = format!("{:0>64x}", std::process::id() as u64 * 104_729);
    let cg = Cgroup::create(&format!(
        "{}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        unique("k8s"),
        unique("uid").replace('-', "_")
    ));
    let scope = format!("container:{id}");
    for name in [&one, &two] {
        std::fs::copy("/bin/true", work.path().join(name)).expect("copy /bin/true");
    }
    // One shell in the container runs both, milliseconds apart.
    let script = format!(
        "echo $$ > {} && {} && {}",
        cg.procs_file().display(),
        work.path().join(&one).display(),
        work.path().join(&two).display()
    );
    let st = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .expect("run the shell");
    assert!(st.success());

    let socket = cap.socket();
    let start = std::time::Instant::now();
    let mine = loop {
        let mine: Vec<pb::Incident> = list_incidents(&socket)
            .await
            .into_iter()
            .filter(|i| i.scope == scope)
            .collect();
        if mine.len() >= 2 && mine.iter().all(|i| i.snapshot_id > 0) {
            break mine;
        }
        assert!(
            start.elapsed() < fdr_tests::DEADLINE * 3,
            "two incidents with their snapshot; have {:?}",
            mine.iter()
                .map(|i| (&i.r#type, i.serial, i.snapshot_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let types: Vec<&str> = mine.iter().map(|i| i.r#type.as_str()).collect();
    assert_eq!(mine.len(), 2, "{types:?}");
    assert!(
        types.contains(&"crypto-miner") && types.contains(&"suspicious-binary"),
        "{types:?}"
    );
    let snapshot_id = mine[0].snapshot_id;
    assert_eq!(
        mine[1].snapshot_id, snapshot_id,
        "both incidents reference one snapshot"
    );
    let serials: Vec<u64> = mine.iter().map(|i| i.serial).collect();

    // Listed once, naming both incidents (open or committed alike).
    let mut c = fdr_cli::client::connect_unix(&socket)
        .await
        .expect("connect");
    let listed = c
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .expect("ListSnapshots")
        .into_inner()
        .snapshots;
    let of_scope: Vec<&pb::SnapshotInfo> = listed.iter().filter(|i| i.scope == scope).collect();
    assert_eq!(of_scope.len(), 1, "one snapshot of the scope: {of_scope:?}");
    assert_eq!(of_scope[0].id, snapshot_id);
    let mut want = serials.clone();
    want.sort_unstable();
    let mut got = of_scope[0].incidents.clone();
    got.sort_unstable();
    assert_eq!(got, want, "the snapshot lists both incidents");
    assert_eq!(of_scope[0].incident, want[0], "the first is its incident");

    // Committed once: both programs' execs and both audits are in it.
    let state = cap.agent.as_ref().expect("running").state.clone();
    let start = std::time::Instant::now();
    let snap = loop {
        if let Some(s) = state.store.get(snapshot_id).expect("read the store") {
            break s;
        }
        assert!(
            start.elapsed() < fdr_tests::DEADLINE * 3,
            "snapshot {snapshot_id} committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let info = snap.info.clone().expect("info");
    assert!(!info.open);
    let ran = |name: &str| {
        snap.events.iter().any(|e| {
            e.kind == pb::EventKind::Exec as i32
                && matches!(&e.detail, Some(pb::event::Detail::Exec(x)) if x.filename.ends_with(name))
        })
    };
    assert!(ran(&one) && ran(&two), "both triggers in the snapshot");
    let audits: Vec<u64> = snap
        .events
        .iter()
        .filter_map(|e| match &e.detail {
            Some(pb::event::Detail::Audit(a)) => Some(a.incident),
            _ => None,
        })
        .collect();
    assert!(
        serials.iter().all(|s| audits.contains(s)),
        "both incidents' audits: {audits:?}"
    );
    // Every event of the container carries the container and its scope
    // (stored once, read back on each).
    assert!(snap
        .events
        .iter()
        .all(|e| e.scope == scope && e.container.as_ref().is_some_and(|c| c.id == id)));
    let stored = state
        .store
        .list()
        .expect("list")
        .into_iter()
        .find(|i| i.id == snapshot_id)
        .expect("indexed");
    let per_event = stored.bytes as f64 / snap.events.len().max(1) as f64;
    println!(
        "snapshot {snapshot_id}: {} events, {} bytes stored ({per_event:.0}/event), {} as plain messages",
        snap.events.len(),
        stored.bytes,
        prost::Message::encoded_len(&snap)
    );
    assert!(
        stored.bytes < prost::Message::encoded_len(&snap) as u64,
        "stored compactly"
    );
    let ids_of_scope = state
        .store
        .list()
        .expect("list")
        .into_iter()
        .filter(|i| i.scope == scope)
        .count();
    assert_eq!(ids_of_scope, 1, "stored once");
    wait_until("nothing pending", || {
        (state.committer.pending().0 == 0).then_some(())
    })
    .await;
    drop(state);
    drop(cg);
    cap.stop().await;
}
