//! A container's first seconds, on a real containerd CRI: its events are
//! judged by its image's model from the first one (the verdicts wait, briefly,
//! for the runtime to name it), so a dropped binary run at once in a new
//! container of a learned image raises a suspicious-binary incident that
//! names the pod, and is not learned. Pod sandboxes are named as such and
//! have no model.

use std::time::Duration;

use fdr_agent::{
    analysis::incidents::IncidentType,
    attribution::scope::Scope,
    event::{Detail, Event, EventKind},
};
use fdr_proto::v1 as pb;
use fdr_tests::{
    containerd::{pod_uid, unique_name, Containerd},
    wait_until, Capture,
};

const NAMESPACE: &str = "fdr-test";

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The oldest recorded event of container `id` (its first sighting).
fn first_event(cap: &Capture, id: &str) -> Option<std::sync::Arc<Event>> {
    cap.recorded(|e| e.scope.container_id() == Some(id))
        .into_iter()
        .min_by_key(|e| e.time_ns)
}

fn learned_in(cap: &Capture, id: &str) -> Vec<String> {
    cap.recorded(|e| e.kind() == EventKind::ModelLearned && e.scope.container_id() == Some(id))
        .iter()
        .filter_map(|e| match &e.record.detail {
            Detail::Learned(l) => Some(format!("{} {} {}", l.model, l.section, l.item)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_binary_in_a_new_containers_first_second_is_flagged_for_its_pod() {
    let containerd = Containerd::start("first-seconds")
        .await
        .expect("containerd starts");
    let socket = containerd.socket().to_path_buf();
    let mut cap = Capture::start_with("first-seconds", move |c| {
        c.attribution.runtime_endpoints = vec![socket];
        c.attribution.engine_endpoints.clear();
        c.analysis.learning_period = Duration::from_secs(4);
        c.recorder.snapshot_after = Duration::from_secs(1);
    })
    .await;
    let state = cap.agent.as_ref().expect("running").state.clone();

    // The image's model, learned from a first container.
    let learn_pod_name = unique_name("learn");
    let learn_pod = containerd
        .run_pod(&learn_pod_name, NAMESPACE, &pod_uid())
        .await
        .expect("first pod");
    let learner = containerd
        .run_container(&learn_pod, "app", &["sh", "-c", "echo hi; sleep 60"])
        .await
        .expect("first container");
    cap.container_start(&learner, "cri").await;
    let meta = wait_until("the first container named", || {
        state.containers.lock().ok()?.get(&learner)
    })
    .await;
    assert_eq!(meta.image, Containerd::IMAGE);
    assert!(!meta.sandbox);
    let key = fdr_agent::analysis::model::container_key(&learner, Some(&meta)).to_string();
    assert!(key.starts_with("image:"), "{key}");
    let until = cap.model_learning_until(&key).await;
    let learned = wait_until("the first container's items learned", || {
        let l = learned_in(&cap, &learner);
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert!(
        learned.iter().all(|l| l.starts_with(&key)),
        "the first container learns under its image from its first event: {learned:?}"
    );
    assert!(
        state
            .models
            .lock()
            .expect("models")
            .get(&format!("container:{learner}"))
            .is_none(),
        "no model of the container's own"
    );
    wait_until("the image's model to be active", || {
        (now_ns() > until).then_some(())
    })
    .await;

    // A new container of the same image drops and runs a binary at once.
    let pod_name = unique_name("victim");
    let pod = containerd
        .run_pod(&pod_name, NAMESPACE, &pod_uid())
        .await
        .expect("second pod");
    let victim = containerd
        .run_container(
            &pod,
            "app",
            &[
                "sh",
                "-c",
                "cat /bin/busybox > /tmp/kworker && chmod +x /tmp/kworker && /tmp/kworker true; sleep 60",
            ],
        )
        .await
        .expect("second container");
    let scope = Scope::Container(victim.as_str().into());
    let named = cap.container_start(&victim, "cri").await;
    let first = first_event(&cap, &victim).expect("the container's events");
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "first event of {victim} to its name: {:.1} ms",
        ms(named.time_ns.saturating_sub(first.time_ns))
    );

    let inc = wait_until("the suspicious-binary incident", || {
        let incs = state.incidents.lock().ok()?;
        let found = incs
            .all()
            .find(|i| i.scope == scope && i.kind == IncidentType::SuspiciousBinary)
            .cloned();
        found
    })
    .await;
    for a in &inc.audits {
        println!(
            "#{} audit {} ms after the container's first event: {}",
            inc.serial,
            ms(a.time_ns.saturating_sub(first.time_ns)),
            a.draft.message
        );
    }
    let dropped = inc
        .audits
        .iter()
        .find(|a| a.draft.item.contains("kworker"))
        .expect("an audit of the dropped binary");
    // Within its first second here (tens of ms); a loaded machine may
    // stretch container creation.
    assert!(
        dropped.time_ns.saturating_sub(first.time_ns) < 3_000_000_000,
        "the binary ran in the container's first seconds"
    );
    assert_eq!(&*inc.model, key.as_str(), "judged by the image's model");
    let c = inc
        .container
        .as_ref()
        .expect("the incident names the container");
    assert_eq!(
        (
            c.pod_name.as_str(),
            c.pod_namespace.as_str(),
            c.image.as_str()
        ),
        (pod_name.as_str(), NAMESPACE, Containerd::IMAGE)
    );
    assert!(inc.summary.contains(&pod_name), "{}", inc.summary);
    let learned = learned_in(&cap, &victim);
    assert!(
        learned.iter().all(|l| !l.contains("kworker")),
        "the dropped binary is not learned: {learned:?}"
    );
    assert!(
        state
            .models
            .lock()
            .expect("models")
            .get(&format!("container:{victim}"))
            .is_none(),
        "no model of the container's own"
    );

    // As the API serves it: the incident and its snapshot name the pod.
    let mut client = fdr_cli::client::connect_unix(&cap.socket())
        .await
        .expect("connect");
    let served = client
        .get_incident(pb::GetIncidentRequest {
            serial: inc.serial,
            ..Default::default()
        })
        .await
        .expect("GetIncident")
        .into_inner();
    assert_eq!(served.r#type, "suspicious-binary");
    assert_eq!(served.scope, format!("container:{victim}"));
    let sc = served.container.expect("container block");
    assert_eq!(
        (
            sc.pod_name.as_str(),
            sc.pod_namespace.as_str(),
            sc.image.as_str()
        ),
        (pod_name.as_str(), NAMESPACE, Containerd::IMAGE)
    );
    let snapshot_id = wait_until("the incident's snapshot", || {
        let s = state.incidents.lock().ok()?.get(inc.serial)?.snapshot_id;
        (s > 0).then_some(s)
    })
    .await;
    // Its container block is filled when the snapshot is stored (its
    // window closed): polled until then.
    let deadline = std::time::Instant::now() + fdr_tests::DEADLINE;
    let snc = loop {
        let snaps = client
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .expect("ListSnapshots")
            .into_inner()
            .snapshots;
        let c = snaps
            .into_iter()
            .find(|s| s.id == snapshot_id)
            .and_then(|s| s.container)
            .filter(|c| !c.pod_name.is_empty());
        if let Some(c) = c {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot {snapshot_id} stored with its pod"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            snc.pod_name.as_str(),
            snc.pod_namespace.as_str(),
            snc.image.as_str()
        ),
        (pod_name.as_str(), NAMESPACE, Containerd::IMAGE)
    );

    // Sandboxes: named as their pod's, no model, nothing learned.
    for (sandbox, name) in [(&learn_pod, &learn_pod_name), (&pod, &pod_name)] {
        let m = wait_until("the sandbox named", || {
            state.containers.lock().ok()?.get(sandbox)
        })
        .await;
        assert!(m.sandbox, "{m:?}");
        assert_eq!(
            (m.pod_name.as_str(), m.pod_namespace.as_str()),
            (name.as_str(), NAMESPACE)
        );
        assert_eq!(m.name, "sandbox");
        assert!(
            state
                .models
                .lock()
                .expect("models")
                .get(&format!("container:{sandbox}"))
                .is_none(),
            "no model for sandbox {sandbox}"
        );
        assert!(
            learned_in(&cap, sandbox).is_empty(),
            "nothing learned for sandbox {sandbox}"
        );
    }

    containerd.remove_pod(&pod).await.expect("remove pod");
    containerd.remove_pod(&learn_pod).await.expect("remove pod");
    cap.stop().await;
    drop(containerd);
}
